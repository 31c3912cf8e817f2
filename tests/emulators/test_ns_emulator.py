"""End to end on a tiny Navier–Stokes dataset: data -> quick U-Net training (residual target,
scalar statistics, as `genfilter train ns2d --quick`) -> checkpoint -> emulator calls
(docs/systems.md, "Navier–Stokes emulator")."""

from __future__ import annotations

import pytest
import torch

from genfilter.emulators.networks import denoiser_config
from genfilter.emulators.training import (
    TrainingConfig,
    load_checkpoint,
    load_emulator,
    train_emulator,
)
from genfilter.observations import Coarsen, Observation, Subsample, isotropic_noise
from genfilter.systems.datasets import DatasetSpec, consecutive_pairs, generate_dataset, load_split

N = 24  # the smallest grid NavierStokes2D accepts; divisible by the quick U-Net's 2 levels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ns_emulator")
    # 4 trajectories x 9 snapshots every 0.5 (the system's interval), short burn-in: 3 train
    # trajectories (24 pairs) and 1 validation trajectory (8 pairs).
    spec = DatasetSpec(
        "ns2d",
        system_kwargs={"resolution": N},
        trajectories=4,
        length=9,
        burn_in=1.0,
        split=(0.75, 0.25, 0.0),
    )
    data = generate_dataset(spec, root / "data", progress=False)
    x_prev, x_next = consecutive_pairs(load_split(data, "train"))
    valid = consecutive_pairs(load_split(data, "valid"))
    cfg = denoiser_config("unet", (N, N), quick=True)
    out = root / "ns.pt"
    result = train_emulator(
        x_prev,
        x_next,
        valid=valid,
        denoiser_config=cfg,
        residual=True,
        stats="scalar",
        config=TrainingConfig(epochs=2, batch_size=2, lr=1e-3, seed=0),
        out=out,
        progress=False,
    )
    return {"data": data, "ckpt": out, "result": result, "x_prev": x_prev, "x_next": x_next}


def test_dataset_and_checkpoint(trained):
    x_prev, x_next = trained["x_prev"], trained["x_next"]
    assert x_prev.shape == x_next.shape == (3 * 8, N, N)
    assert torch.isfinite(x_prev).all() and x_prev.std() > 0.1
    ckpt = load_checkpoint(trained["ckpt"])
    ec = ckpt["emulator_config"]
    assert ec["residual"] is True and ckpt["meta"]["stats"] == "scalar"
    # scalar statistics are stored as plain floats, residual_std < 1 (increments are smaller)
    assert all(isinstance(ec[k], float) for k in ("mean", "std", "residual_std"))
    assert 0 < ec["residual_std"] < 1.5
    assert ckpt["denoiser_config"]["hidden_channels"] == [16, 32]
    assert ckpt["meta"]["epochs_done"] == 2


def test_training_loss_decreases(trained):
    h = trained["result"].history
    assert len(h["train_loss"]) == 2 and all(torch.isfinite(torch.tensor(h["train_loss"])))
    assert h["train_loss"][-1] < h["train_loss"][0]
    # the fixed-noise validation loss: epoch 0 is the untrained network (≈ 1)
    assert h["valid_epoch"] == [0, 1, 2]
    assert h["valid_loss"][-1] < h["valid_loss"][0]


def test_emulator_calls_give_finite_fields(trained):
    em = load_emulator(trained["ckpt"], steps=4)
    x = trained["x_prev"][:3].clone()
    g = torch.Generator().manual_seed(0)

    s = em.sample(x, generator=g)
    assert s.shape == x.shape and torch.isfinite(s).all()
    assert not torch.equal(s, x)

    m = em.predict_mean(x, generator=g)
    assert m.shape == x.shape and torch.isfinite(m).all()

    truth = trained["x_next"][0]
    for op, M in ((Coarsen(4), (N // 4) ** 2), (Subsample(4), (N // 4) ** 2)):
        y = op(truth[None])[0] + 0.05 * torch.randn(M, generator=g)
        obs = Observation(y, op, isotropic_noise(0.05))
        p = em.sample_posterior(x, obs, generator=g)
        assert p.shape == x.shape and torch.isfinite(p).all(), op


def test_loaded_emulator_matches_training_result(trained):
    """The checkpoint holds the returned emulator's EMA weights and normalisation."""
    em = load_emulator(trained["ckpt"])
    ref = trained["result"].emulator
    x = trained["x_prev"][:2].clone()
    a = em.predict_mean(x, generator=torch.Generator().manual_seed(1))
    b = ref.predict_mean(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_train_system_builds_the_unet_of_channels_and_blocks(trained, tmp_path):
    """`genfilter train ns2d --channels 8,16,32 --blocks 1,2,1`: the checkpoint records that
    U-Net (three depths on the 24² grid), loads and samples finite fields; a grid that the
    depths do not divide is a clear error before any training."""
    from genfilter.experiments.emulator_jobs import train_system

    out = tmp_path / "deep.pt"
    train_system(
        "ns2d",
        trained["data"],
        out,
        epochs=1,
        batch_size=8,
        channels=[8, 16, 32],
        blocks=[1, 2, 1],
        progress=False,
        echo=lambda *a: None,
    )
    cfg = load_checkpoint(out)["denoiser_config"]
    assert cfg["hidden_channels"] == [8, 16, 32] and cfg["hidden_blocks"] == [1, 2, 1]
    em = load_emulator(out, steps=2)
    x = trained["x_prev"][:2]
    y = em.sample(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError, match=r"grid \(24, 24\) must be divisible by 16"):
        train_system("ns2d", trained["data"], tmp_path / "x.pt", channels=[4, 4, 4, 4, 4])
    assert not (tmp_path / "x.pt").exists()
