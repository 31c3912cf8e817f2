"""Properties of the emulator training loop, checkpoints and resume (docs/training.md;
docs/method.md#diffusion-emulator), on synthetic linear-Gaussian pairs
x' = A x + b + 0.3 ε in D = 3."""

from __future__ import annotations

import pytest
import torch
from azula.noise import VESchedule, VPSchedule

from genfilter.emulators.diffusion import DiffusionEmulator
from genfilter.emulators.networks import build_denoiser_from_config, denoiser_config
from genfilter.emulators.training import (
    FORMAT,
    TrainingConfig,
    denoising_loss,
    draw_times,
    load_checkpoint,
    load_emulator,
    normalisation_stats,
    save_emulator,
    time_of_log_ratio,
    train_emulator,
)

D = 3


def _model():
    g = torch.Generator().manual_seed(0)
    A = 0.9 * torch.linalg.qr(torch.randn(D, D, generator=g))[0]
    b = torch.tensor([1.0, -0.5, 0.3])
    return A, b


def _pairs(n: int, seed: int):
    A, b = _model()
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, D, generator=g)
    return x, x @ A.T + b + 0.3 * torch.randn(n, D, generator=g)


MLP = denoiser_config("mlp", (D,), hidden=64, layers=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "l3.pt"
    config = TrainingConfig(epochs=10, batch_size=128, lr=1e-3, seed=0, checkpoint_every=5)
    result = train_emulator(
        *_pairs(2048, 1),
        valid=_pairs(512, 2),
        denoiser_config=MLP,
        config=config,
        out=path,
        progress=False,
    )
    return result, path


def test_validation_loss_decreases(trained):
    """Fixed-noise validation loss: epoch 0 (untrained, ≈ 1 for unit-scale targets) ->
    below 0.7 of it (irreducible ≈ 0.46 for this noise level)."""
    result, _ = trained
    v = result.history["valid_loss"]
    assert result.history["valid_epoch"] == list(range(11))
    assert v[-1] < 0.7 * v[0]
    assert len(result.history["train_loss"]) == 10 and result.epoch == 10


def test_trained_sample_mean_is_closer_to_truth_than_untrained(trained):
    result, _ = trained
    A, b = _model()
    x0 = torch.tensor([[1.0, 2.0, -1.0], [-2.0, 0.5, 1.5], [0.0, -3.0, 0.5]])
    xs = x0.repeat_interleave(300, 0)
    untrained = DiffusionEmulator(
        build_denoiser_from_config(MLP),
        (D,),
        steps=16,
        **{
            k: torch.tensor(v) if isinstance(v, list) else v
            for k, v in result.emulator_config.items()
            if k != "state_shape"
        },
    )
    result.emulator.steps = 16
    errors = []
    for em in (untrained, result.emulator):
        s = em.sample(xs, generator=torch.Generator().manual_seed(3)).reshape(3, 300, D)
        errors.append((s.mean(1) - (x0 @ A.T + b)).norm(dim=-1).max())
    assert errors[1] < 0.5 * errors[0] and errors[1] < 0.4


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_emulator(trained):
    result, path = trained
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == FORMAT
    assert ckpt["denoiser_config"] == MLP
    assert set(ckpt["emulator_config"]) == {
        "state_shape",
        "mean",
        "std",
        "residual",
        "residual_std",
    }
    assert ckpt["train_state"]["epoch"] == 10 and ckpt["meta"]["seed"] == 0
    em = load_emulator(path, steps=8, sampler="ddim")
    assert em.steps == 8 and not em.training
    assert not any(p.requires_grad for p in em.parameters())
    g = torch.Generator().manual_seed(5)
    u, c, t = (
        torch.randn(7, D, generator=g),
        torch.randn(7, D, generator=g),
        torch.rand(7, generator=g),
    )
    torch.testing.assert_close(
        em.denoiser(u, t, cond=c).mean, result.emulator.denoiser(u, t, cond=c).mean, rtol=0, atol=0
    )
    for name in ("state_mean", "state_std", "residual_std"):
        assert torch.equal(getattr(em, name), getattr(result.emulator, name))


def test_save_emulator_round_trip(trained, tmp_path):
    result, _ = trained
    path = save_emulator(result.emulator, tmp_path / "saved.pt", history=result.history)
    assert load_checkpoint(path)["train_state"] is None
    em = load_emulator(path)
    x = torch.randn(4, D, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(
        em.predict_mean(x, generator=g1), result.emulator.predict_mean(x, generator=g2)
    )


def test_resume_gives_bit_identical_weights(tmp_path):
    data = _pairs(256, 4)
    valid = _pairs(64, 5)
    cfg = denoiser_config("mlp", (D,), hidden=16, layers=2)

    def run(epochs, path, resume=False):
        config = TrainingConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=7, checkpoint_every=1)
        return train_emulator(
            *data,
            valid=valid,
            denoiser_config=cfg,
            config=config,
            out=path,
            resume=resume,
            progress=False,
        )

    straight = run(4, tmp_path / "a.pt")
    run(2, tmp_path / "b.pt")
    resumed = run(4, tmp_path / "b.pt", resume=True)
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
        assert torch.equal(a["train_state"]["model"][key], b["train_state"]["model"][key]), key
    assert straight.history == resumed.history | {"seconds": straight.history["seconds"]}
    assert resumed.epoch == 4


def test_resume_refuses_a_different_architecture(tmp_path):
    data = _pairs(64, 4)
    config = TrainingConfig(epochs=1, batch_size=32)
    train_emulator(*data, denoiser_config=MLP, config=config, out=tmp_path / "c.pt", progress=False)
    other = denoiser_config("mlp", (D,), hidden=32, layers=2)
    with pytest.raises(ValueError, match="denoiser_config"):
        train_emulator(
            *data,
            denoiser_config=other,
            config=config,
            out=tmp_path / "c.pt",
            resume=True,
            progress=False,
        )


def test_denoising_loss_is_azulas_karras_loss():
    d = build_denoiser_from_config(MLP)
    torch.nn.init.normal_(d.backbone.output.weight, std=0.1)
    u, c, t = torch.randn(6, D), torch.randn(6, D), torch.rand(6)
    torch.manual_seed(11)
    expected = d.loss(u, t, cond=c)
    torch.manual_seed(11)
    z = torch.randn_like(u)
    torch.testing.assert_close(denoising_loss(d, u, t, z, cond=c).mean(), expected)


@pytest.mark.parametrize("schedule", [VESchedule(1e-3, 1e2), VPSchedule(1e-3, 1e-3)])
def test_lognormal_times_invert_the_schedule(schedule):
    """time_sampling='lognormal': log(σ_t/α_t) of the drawn t is N(-1.2, 1.2²) inside the
    schedule's range; out-of-range draws clip to t in {0, 1}."""
    target = torch.tensor([-3.0, -1.2, 0.0, 2.0], dtype=torch.float64)
    alpha, sigma = schedule(time_of_log_ratio(schedule, target))
    torch.testing.assert_close(torch.log(sigma / alpha), target)
    t = draw_times(20000, torch.Generator().manual_seed(0), schedule, TrainingConfig())
    assert t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    alpha, sigma = schedule(t.double())
    r = torch.log(sigma / alpha)
    assert abs(r.mean() + 1.2) < 0.05 and abs(r.std() - 1.2) < 0.05
    u = draw_times(
        20000, torch.Generator().manual_seed(0), schedule, TrainingConfig(time_sampling="uniform")
    )
    assert abs(u.mean() - 0.5) < 0.01


def test_normalisation_stats_reductions():
    g = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(500, 2, 4, 4, generator=g)
    y = x + 0.1 * torch.randn(500, 2, 4, 4, generator=g)
    s = normalisation_stats(x, y, stats="scalar", residual=True)
    assert isinstance(s["mean"], float) and abs(s["mean"] - 3) < 0.1 and abs(s["std"] - 2) < 0.1
    assert abs(s["residual_std"] - 0.05) < 0.005  # std of (y - x) / s
    c = normalisation_stats(x, y, stats="per_channel")
    assert torch.tensor(c["mean"]).shape == (2, 1, 1) and c["residual_std"] == 1.0
    p = normalisation_stats(x, y)
    assert torch.tensor(p["std"]).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="stats"):
        normalisation_stats(x, y, stats="global")


def test_normalisation_stats_are_exact_across_chunks():
    """Moments are merged chunk by chunk (4096 pairs); they equal the one-pass values."""
    g = torch.Generator().manual_seed(1)
    x = 5 + 3 * torch.randn(5000, 2, generator=g, dtype=torch.float64)
    y = x + 0.2 * torch.randn(5000, 2, generator=g, dtype=torch.float64)
    s = normalisation_stats(x, y, residual=True)
    std, mean = torch.std_mean(torch.cat([x, y]), dim=0)
    f64 = dict(dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(s["mean"], **f64), mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.tensor(s["std"], **f64), std, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        torch.tensor(s["residual_std"], **f64), ((y - x) / std).std(dim=0), rtol=1e-12, atol=0
    )


def test_field_training_with_unet_and_residual_target(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, 8, generator=g)
    y = torch.roll(x, 1, -1) + 0.1 * torch.randn(16, 8, 8, generator=g)
    cfg = denoiser_config("unet", (8, 8), quick=True)
    res = train_emulator(
        x,
        y,
        valid=(x[:4], y[:4]),
        denoiser_config=cfg,
        residual=True,
        stats="scalar",
        config=TrainingConfig(epochs=1, batch_size=8),
        out=tmp_path / "f.pt",
        progress=False,
    )
    assert res.emulator.residual and res.emulator_config["residual_std"] != 1.0
    em = load_emulator(tmp_path / "f.pt", steps=2)
    assert em.sample(x[:2], generator=torch.Generator().manual_seed(0)).shape == (2, 8, 8)


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", -1),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("weight_decay", -1e-3),
        ("ema_decay", 1.0),
        ("grad_clip", 0.0),
        ("seed", -3),
        ("valid_every", 0),
        ("checkpoint_every", True),
        ("lr_schedule", "linear"),
        ("time_sampling", "beta"),
        ("lognormal_std", 0.0),
        ("device", "gpu0"),
        ("ema_warmup", "yes"),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"TrainingConfig\.{field}.*{value!r}"):
        TrainingConfig(**{field: value})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x_next=torch.randn(10, 4)), "training x_next"),
        (dict(x_next=torch.randn(9, D)), "same number of pairs"),
        (dict(valid=(torch.randn(4, D), torch.randn(4, 2))), "validation x_next"),
        (dict(resume=True), "out="),
    ],
)
def test_bad_inputs_fail_fast(kwargs, match):
    args = dict(
        x_prev=torch.randn(10, D), x_next=torch.randn(10, D), denoiser_config=MLP, progress=False
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_emulator(args.pop("x_prev"), args.pop("x_next"), **args)


def test_resume_on_other_data_is_refused(tmp_path):
    """A checkpoint trained on other data is not silently continued."""
    from genfilter.emulators.networks import denoiser_config as _cfg
    from genfilter.emulators.training import TrainingConfig as _TC
    from genfilter.emulators.training import train_emulator as _train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    cfg = _cfg("mlp", (3,), hidden=8, layers=1, emb_features=8)
    out = tmp_path / "c.pt"
    _train(
        x,
        0.5 * x,
        denoiser_config=cfg,
        config=_TC(epochs=1, batch_size=32),
        out=out,
        progress=False,
    )
    with pytest.raises(ValueError, match="trained on other data"):
        _train(
            3 * x + 5,
            x,
            denoiser_config=cfg,
            config=_TC(epochs=2, batch_size=32),
            out=out,
            resume=True,
            progress=False,
        )


def test_init_starts_from_the_checkpoint_weights_and_keeps_its_normalisation(trained, tmp_path):
    """Fine-tuning (``init=``): before the first step the EMA network is the checkpoint's, so
    the epoch-0 validation loss equals the checkpoint's last one bit for bit (same weights,
    statistics, times and noises); the checkpoint's statistics are kept although the new
    data's differ, and a fine-tuning run resumed half-way gives the same weights as a straight
    one."""
    result, path = trained
    x, y = _pairs(512, 3)
    x, y = 1.5 * x + 2.0, 1.5 * y + 2.0  # other units: other statistics
    base = load_checkpoint(path)
    assert normalisation_stats(x, y, stats="per_component")["mean"] != pytest.approx(
        base["emulator_config"]["mean"]
    )

    def run(epochs, out, resume=False):
        return train_emulator(
            x,
            y,
            valid=_pairs(512, 2),
            denoiser_config=MLP,
            config=TrainingConfig(epochs=epochs, batch_size=128, lr=1e-4, seed=0),
            out=out,
            resume=resume,
            init=path,
            progress=False,
        )

    straight = run(2, tmp_path / "a.pt")
    assert straight.history["valid_loss"][0] == result.history["valid_loss"][-1]
    fresh = train_emulator(
        x,
        y,
        valid=_pairs(512, 2),
        denoiser_config=MLP,
        config=TrainingConfig(epochs=1, batch_size=128, seed=0),
        progress=False,
    )
    assert fresh.history["valid_loss"][0] > 1.5 * straight.history["valid_loss"][0]
    a = load_checkpoint(tmp_path / "a.pt")
    assert a["emulator_config"] == base["emulator_config"]
    assert a["meta"]["init"] == str(path)
    run(1, tmp_path / "b.pt")
    run(2, tmp_path / "b.pt", resume=True)
    b = load_checkpoint(tmp_path / "b.pt")
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_init_refuses_another_architecture(trained, tmp_path):
    with pytest.raises(ValueError, match="cannot start from .*denoiser_config"):
        train_emulator(
            *_pairs(64, 3),
            denoiser_config=denoiser_config("mlp", (D,), hidden=32, layers=2),
            config=TrainingConfig(epochs=1, batch_size=32),
            init=trained[1],
            progress=False,
        )
