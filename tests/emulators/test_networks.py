"""Properties of the emulator backbones and the denoiser factory (docs/training.md)."""

from __future__ import annotations

import pytest
import torch
from azula.denoise import KarrasDenoiser
from azula.noise import VESchedule, VPSchedule

from genfilter.emulators.diffusion import DiffusionEmulator
from genfilter.emulators.networks import (
    FieldUNet,
    ResidualMLP,
    build_denoiser,
    build_denoiser_from_config,
    denoiser_config,
)


def _randomise_output(layer: torch.nn.Module) -> None:
    """The output layers are zero-initialised; give them weights so outputs depend on inputs."""
    torch.manual_seed(0)
    torch.nn.init.normal_(layer.weight, std=0.1)
    torch.nn.init.normal_(layer.bias, std=0.1)


def test_mlp_shapes_scalar_and_batched_time():
    net = ResidualMLP(3, 3, hidden=32, layers=2)
    x, c = torch.randn(5, 3), torch.randn(5, 3)
    assert net(x, torch.randn(5), cond=c).shape == (5, 3)
    assert net(x, torch.tensor(0.2), cond=c).shape == (5, 3)  # samplers pass a scalar t


def test_mlp_output_layer_is_zero_initialised():
    net = ResidualMLP(3, 3, hidden=32, layers=2)
    assert torch.equal(
        net(torch.randn(4, 3), torch.randn(4), cond=torch.randn(4, 3)), torch.zeros(4, 3)
    )


def test_mlp_uses_condition_and_noise_level():
    net = ResidualMLP(3, 3, hidden=32, layers=2)
    _randomise_output(net.output)
    x, c, t = torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4)
    y = net(x, t, cond=c)
    assert not torch.allclose(y, net(x, t, cond=c + 1.0))
    assert not torch.allclose(y, net(x, t + 2.0, cond=c))


def test_mlp_requires_condition():
    net = ResidualMLP(3, 3, hidden=8, layers=1)
    with pytest.raises(TypeError, match="cond"):
        net(torch.randn(2, 3), torch.zeros(2))


@pytest.mark.parametrize("shape", [(16, 16), (2, 16, 16)])
def test_unet_shapes_with_and_without_channel_axis(shape):
    c = shape[0] if len(shape) == 3 else 1
    net = FieldUNet(channels=c, cond_channels=c, quick=True)
    x = torch.randn(2, *shape)
    assert net(x, torch.randn(2), cond=torch.randn(2, *shape)).shape == x.shape
    assert net(x, torch.tensor(0.0), cond=torch.randn(2, *shape)).shape == x.shape


def test_unet_uses_condition_and_is_periodic():
    net = FieldUNet(quick=True)
    _randomise_output(net.unet.ascent[-1][-1])
    x, c, t = torch.randn(1, 16, 16), torch.randn(1, 16, 16), torch.zeros(1)
    y = net(x, t, cond=c)
    assert not torch.allclose(y, net(x, t, cond=c + 1.0))
    # circular padding + stride-2 levels: shifting input by 2^levels shifts the output
    shift = 2 ** (net.levels - 1) * 2
    ys = net(x.roll(shift, -1), t, cond=c.roll(shift, -1))
    torch.testing.assert_close(ys, y.roll(shift, -1), atol=1e-5, rtol=1e-5)


def test_config_is_plain_and_complete():
    cfg = denoiser_config("unet", (32, 32), quick=True)
    plain = (str, int, float, bool, list)
    assert all(isinstance(v, plain) for v in cfg.values())
    assert cfg["hidden_channels"] == [16, 32] and cfg["schedule"] == "ve"
    assert cfg["sigma_min"] == 1e-3 and cfg["sigma_max"] == 1e2
    vp = denoiser_config("mlp", (3,), schedule="vp")
    assert "sigma_max" not in vp and vp["alpha_min"] == 1e-3


def test_build_from_config_rebuilds_the_same_architecture():
    d = build_denoiser("mlp", (3,), hidden=16, layers=3)
    assert isinstance(d, KarrasDenoiser) and isinstance(d.schedule, VESchedule)
    d2 = build_denoiser_from_config(d.denoiser_config)
    assert d2.denoiser_config == d.denoiser_config
    d2.load_state_dict(d.state_dict())  # same keys and shapes
    assert isinstance(build_denoiser("mlp", (3,), schedule="vp").schedule, VPSchedule)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="cnn", state_shape=(3,)), "kind"),
        (dict(kind="mlp", state_shape=(4, 4)), "flat"),
        (dict(kind="unet", state_shape=(8,)), "state_shape"),
        (dict(kind="mlp", state_shape=(3,), schedule="cosine"), "schedule"),
        (dict(kind="mlp", state_shape=(3,), sigma_min=1.0, sigma_max=0.5), "sigma_min"),
        (dict(kind="mlp", state_shape=(3,), widht=3), "widht"),
    ],
)
def test_bad_config_names_the_problem(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build_denoiser(**kwargs)


@pytest.mark.parametrize("kind, shape", [("mlp", (3,)), ("unet", (8, 8))])
def test_denoiser_plugs_into_diffusion_emulator(kind, shape):
    kw = dict(hidden=16, layers=2) if kind == "mlp" else dict(quick=True)
    d = build_denoiser(kind, shape, **kw)
    em = DiffusionEmulator(d, shape, steps=4)
    x = torch.randn(5, *shape, dtype=torch.float64)
    out = em.sample(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert em.predict_mean(x, generator=torch.Generator().manual_seed(0)).shape == x.shape
