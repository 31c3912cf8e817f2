"""Every filter runs with its particles on another device than the CPU tensors it creates
(``genfilter filter --device cuda``), checked without a GPU by :mod:`device_check`: the
particles and the emulator stand on a tagged CPU device, and any operation that mixes
them with plain CPU tensors (what CUDA refuses) is recorded.  The mixing that the first GPU
run found (log-weights, the EnKF's innovations, the diffusion emulator's initial noise)
was found here too before it was fixed."""

from __future__ import annotations

import pytest
import torch
from device_check import DEVICE, DeviceCheck
from seeded_unet import seeded_quick_unet

from genfilter.experiments.config import parse_config
from genfilter.experiments.runner import build_emulator, build_twin_setup, run_one

# EnSF / EnFF get their normalisation (else computed from a climatology run) and few steps
OPTIONS = {
    "letkf": {"radius": 1.0},
    "ensf": {"steps": 20, "mean": 0.0, "std": 8.0},
    "enff": {"sigma_min": 0.01, "guidance_scale": 1.0, "mean": 0.0, "std": 8.0},
}
METHODS = ["fa-apf", "bpf", "enkf", "etkf", "letkf", "flowdas", "ensf", "enff", "forecast"]


def test_the_check_records_mixed_devices():
    """The negative control: a CPU vector added to a data-device vector is recorded; a CPU
    scalar, a CPU index and a moved vector are not."""
    with DeviceCheck() as check:
        x = torch.ones(4).to(DEVICE)
        x + torch.arange(4.0)
    assert len(check.mismatches) == 1 and "add" in check.mismatches[0]
    with DeviceCheck() as check:
        x = torch.ones(4).to(DEVICE)
        x * torch.tensor(2.0) + torch.arange(4.0).to(x.device)
        x[torch.tensor([0, 2])]
        torch.randn(3, generator=torch.Generator(), device="cpu").to(x)
    assert check.mismatches == []
    with DeviceCheck() as check:
        torch.randn(3, generator=torch.Generator(), device=DEVICE)
    assert len(check.mismatches) == 1 and "CPU generator" in check.mismatches[0]


@pytest.mark.parametrize("method", METHODS)
def test_lorenz63_filters_keep_their_particles_on_the_device(method):
    cfg = parse_config(
        {
            "name": "device",
            "setup": "l63-a",
            "emulator": "shipped",
            "emulator_options": {"steps": 4},
            "filter": {"method": method, "particles": 6, "options": OPTIONS.get(method, {})},
            "steps": 2,
            "burn_in": 0,
        }
    )
    setup = build_twin_setup(cfg)
    em = build_emulator(cfg, setup)
    reference = run_one(cfg, 0, setup, em)
    with DeviceCheck(exempt=em) as check:
        run = run_one(cfg, 0, setup, em, device=DEVICE)
    assert not check.mismatches, "\n" + check.report()
    # the record comes back to the CPU, with the numbers of the CPU run
    assert type(run.means) is torch.Tensor and type(run.particles) is torch.Tensor
    torch.testing.assert_close(run.means, reference.means)


@pytest.mark.parametrize(
    ("factor", "method", "options"),
    [
        (4, "fa-apf", {}),
        (2, "fa-apf", {}),
        (2, "flowdas", {}),
        (4, "fa-apf", {"localization": 4.0}),
    ],
)
def test_navier_stokes_guidance_keeps_its_particles_on_the_device(factor, method, options):
    """The matrix-free observed covariance, exact (coarsening 4 of 32²: 64 values) and
    Krylov (coarsening 2: 256 values), with an untrained quick U-Net; and FA-APF's
    localised weights on the 2D periodic grid."""
    from genfilter.emulators.diffusion import DiffusionEmulator

    res = 32
    em = DiffusionEmulator(
        seeded_quick_unet(res), (res, res), std=2.3, residual=True, residual_std=0.6, steps=2
    )
    cfg = parse_config(
        {
            "name": "device",
            "system": "ns2d",
            "system_options": {"resolution": res},
            "emulator": "true",
            "observations": {"operator": "coarsen", "factor": factor, "noise_std": 0.115},
            "initial": {"recipe": "perturbed", "std": 0.0, "spinup": 1.0},
            "filter": {"method": method, "particles": 3, "options": options},
            "steps": 2,
            "burn_in": 0,
        }
    )
    setup = build_twin_setup(cfg)
    with DeviceCheck(exempt=em) as check:
        run = run_one(cfg, 0, setup, em, device=DEVICE)
    assert not check.mismatches, "\n" + check.report()
    assert torch.isfinite(run.means).all()
    if options:  # the second step went through the localised weights
        assert not run.infos[1].skipped_weights and "seams" in run.infos[1].extra
