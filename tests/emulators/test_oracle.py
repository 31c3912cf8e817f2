"""The importance-sampled emulator (oracle FA-APF): its proposal matches the exact Gaussian
posterior of a linear-Gaussian transition, and FA-APF on it tracks the Kalman filter."""

from __future__ import annotations

import torch

import genfilter as gf
from genfilter.emulators.oracle import ImportanceSampledEmulator
from genfilter.emulators.simulator import SimulatorEmulator
from genfilter.systems.linear_gaussian import LinearGaussian

SYSTEM = LinearGaussian(dim=3, seed=0)  # exact Gaussian transitions, drawn directly


def _model():
    return SYSTEM.A, SYSTEM.b, SYSTEM.Q


def _exact_transition():
    return SimulatorEmulator(SYSTEM)


def test_proposal_matches_the_exact_gaussian_posterior():
    """x' | x, y ~ N(m, P) with P = (Q⁻¹ + Hᵀ R⁻¹ H)⁻¹, m = P (Q⁻¹ (A x + b) + Hᵀ R⁻¹ y):
    4000 proposals from one x agree with m and P to Monte-Carlo precision."""
    A, b, Q = _model()
    em = ImportanceSampledEmulator(_exact_transition(), draws=400)
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64).repeat(4000, 1)
    obs = gf.Observation(
        torch.tensor([-0.8, 0.9], dtype=torch.float64), gf.Select([0, 2]), gf.isotropic_noise(0.5)
    )
    out = em.sample_posterior(x, obs, generator=torch.Generator().manual_seed(1))
    H = torch.zeros(2, 3, dtype=torch.float64)
    H[0, 0] = H[1, 2] = 1.0
    Rinv = 4.0 * torch.eye(2, dtype=torch.float64)
    P = torch.linalg.inv(torch.linalg.inv(Q) + H.T @ Rinv @ H)
    m = P @ (torch.linalg.inv(Q) @ (A @ x[0] + b) + H.T @ Rinv @ obs.y)
    se = (P.diagonal() / 4000).sqrt()
    assert ((out.mean(0) - m).abs() < 4 * se + 0.01).all(), (out.mean(0), m)
    assert torch.allclose(out.T.cov(), P, atol=0.2 * float(P.diagonal().max())), (out.T.cov(), P)
    # the prior is visibly different: the test can tell the proposal from the forecast
    prior = em.sample(x, generator=torch.Generator().manual_seed(2))
    assert (prior.mean(0) - m).abs().max() > 10 * se.max()


def test_oracle_fa_apf_tracks_the_kalman_filter():
    A, b, Q = _model()
    g = torch.Generator().manual_seed(3)
    x, truth = torch.zeros(3, dtype=torch.float64), []
    for _ in range(15):
        x = A @ x + b + torch.linalg.cholesky(Q) @ torch.randn(3, generator=g, dtype=torch.float64)
        truth.append(x)
    truth = torch.stack(truth)
    obs = gf.synthetic_observations(truth, gf.Select([0, 2]), gf.isotropic_noise(0.5), generator=g)
    em = ImportanceSampledEmulator(_exact_transition(), draws=200)
    x0 = torch.randn(400, 3, generator=g, dtype=torch.float64)
    run = gf.assimilate(
        gf.FAAPF(em, weights="exact", exact_samples=200, generator=4), x0, obs, progress=False
    )
    kf = gf.KalmanFilter(A, b, Q).filter(
        torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), obs
    )
    err = (run.means - kf.means).norm(dim=1) / kf.covs.diagonal(dim1=1, dim2=2).sum(1).sqrt()
    assert float(err.max()) < 0.25, err
