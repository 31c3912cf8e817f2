"""A tiny Navier–Stokes FA-APF run in the default suite: a 24² twin (the smallest grid
NavierStokes2D accepts) observed through a 6× subsampling (16 values) with noise std 0.05 in units of the
field's standard deviation (as in FlowDAS, Chen et al. 2025, arXiv:2501.16642), filtered by
FA-APF (Savary, Rozet & Louppe 2026, Algorithm 1) with an untrained, deterministically
initialised quick U-Net diffusion emulator (docs/systems.md, "Navier–Stokes emulator")."""

from __future__ import annotations

import torch
from seeded_unet import seeded_quick_unet

from genfilter.emulators.diffusion import DiffusionEmulator
from genfilter.filters import FAAPF, assimilate
from genfilter.observations import Subsample, isotropic_noise, synthetic_observations
from genfilter.systems.navier_stokes import NavierStokes2D

RES, N, STEPS = 24, 4, 2


def _emulator(std: float) -> DiffusionEmulator:
    """The seeded quick U-Net (:func:`seeded_unet.seeded_quick_unet`) as an emulator."""
    # residual target with the scalar statistics of a 32² NS dataset (docs/systems.md:
    # increment std 0.60 of the state std); 8 reverse-diffusion steps keep the test fast
    return DiffusionEmulator(
        seeded_quick_unet(RES),
        (RES, RES),
        mean=0.0,
        std=std,
        residual=True,
        residual_std=0.6,
        steps=8,
    )


def test_fa_apf_on_a_tiny_navier_stokes_twin():
    system = NavierStokes2D(resolution=RES)
    g = torch.Generator().manual_seed(0)
    x0 = system.attractor_states(1, g, burn_in=2.0)
    truth = system.trajectory(x0, STEPS, g)[1:, 0]  # (STEPS, RES, RES), after x0
    std = float(x0.std())
    sigma_y = 0.05 * std
    op = Subsample(6)
    observations = synthetic_observations(truth, op, isotropic_noise(sigma_y), generator=g)
    M = (RES // 6) ** 2

    emulator = _emulator(std)
    # "auto" picks the matrix-free observation-space covariance for a 576-value state
    assert emulator.guidance_covariance == "observed"
    particles0 = x0 + 0.5 * std * torch.randn((N, RES, RES), generator=g)
    filt = FAAPF(emulator, generator=1)
    run = assimilate(filt, particles0, observations, truth, progress=False)

    # shapes and finiteness
    assert run.steps == STEPS
    assert run.particles.shape == (STEPS, N, RES, RES)
    assert run.means.shape == run.spreads.shape == (STEPS, RES, RES)
    assert torch.isfinite(run.particles).all() and torch.isfinite(run.means).all()
    for k, info in enumerate(run.infos):
        assert 1.0 <= info.ess <= N + 1e-9, (k, info.ess)
        assert 0.0 < info.inflation <= 1.0
        assert info.log_evidence is not None and torch.isfinite(torch.tensor(info.log_evidence))
        assert info.resampled and 1 <= info.unique_ancestors <= N
        assert not info.skipped_weights  # the initial particles differ
    assert all(torch.isfinite(v).all() for v in run.metrics.values())

    # The guided proposal pulls the observed values to the observations: compare, from the
    # same previous particles, the misfit of the FA-APF analysis members with that of the
    # unguided forecast.  The forecast spread of an observed value (0.6 std) is 12x the
    # observation noise, so a working guidance cuts the misfit by far more than the factor
    # asked here; no guidance (or a wrong sign) would leave it at the forecast's level.
    previous = torch.cat((particles0[None], run.particles[:-1]))
    for k in range(STEPS):
        y = observations[k].y
        guided = (op(run.particles[k]) - y).square().mean()
        forecast = emulator.sample(previous[k], generator=torch.Generator().manual_seed(k))
        unguided = (op(forecast) - y).square().mean()
        assert guided < 0.1 * unguided, (k, float(guided), float(unguided))
        # and the analysis ends within a few observation-noise std of y
        assert guided.sqrt() < 3 * sigma_y, (k, float(guided.sqrt()), sigma_y)
        assert op(run.particles[k]).shape == (N, M)
