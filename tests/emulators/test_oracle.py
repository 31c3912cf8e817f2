"""The importance-sampled emulator (oracle FA-APF): its proposal matches the exact Gaussian
posterior of a linear-Gaussian transition (from fresh draws, and from one prior draw moved
by path moves), the proposal after the exact weights comes from the weights' own draws, and
FA-APF on it tracks the Kalman filter."""

from __future__ import annotations

import math

import pytest
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


X0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
OBS = gf.Observation(
    torch.tensor([-0.8, 0.9], dtype=torch.float64), gf.Select([0, 2]), gf.isotropic_noise(0.5)
)


def _posterior() -> tuple[torch.Tensor, torch.Tensor]:
    """x' | x, y ~ N(m, P) with P = (Q⁻¹ + Hᵀ R⁻¹ H)⁻¹, m = P (Q⁻¹ (A x + b) + Hᵀ R⁻¹ y)."""
    A, b, Q = _model()
    H = torch.zeros(2, 3, dtype=torch.float64)
    H[0, 0] = H[1, 2] = 1.0
    Rinv = 4.0 * torch.eye(2, dtype=torch.float64)
    P = torch.linalg.inv(torch.linalg.inv(Q) + H.T @ Rinv @ H)
    m = P @ (torch.linalg.inv(Q) @ (A @ X0[0] + b) + H.T @ Rinv @ OBS.y)
    return m, P


def _assert_posterior(out: torch.Tensor) -> None:
    m, P = _posterior()
    se = (P.diagonal() / out.shape[0]).sqrt()
    assert ((out.mean(0) - m).abs() < 4 * se + 0.01).all(), (out.mean(0), m)
    assert torch.allclose(out.T.cov(), P, atol=0.2 * float(P.diagonal().max())), (out.T.cov(), P)


def test_proposal_matches_the_exact_gaussian_posterior():
    """4000 proposals from one x agree with the exact posterior to Monte-Carlo precision."""
    em = ImportanceSampledEmulator(_exact_transition(), draws=400)
    x = X0.repeat(4000, 1)
    out = em.sample_posterior(x, OBS, generator=torch.Generator().manual_seed(1))
    _assert_posterior(out)
    # the prior is visibly different: the test can tell the proposal from the forecast
    m, P = _posterior()
    prior = em.sample(x, generator=torch.Generator().manual_seed(2))
    assert (prior.mean(0) - m).abs().max() > 10 * (P.diagonal() / 4000).sqrt().max()


def test_path_moves_turn_a_prior_draw_into_a_posterior_draw():
    """With one draw per particle the proposal is a forecast (sampling importance resampling
    over one draw); 200 preconditioned Crank–Nicolson moves on its noise make it a draw of
    the exact posterior. Without the moves the same check fails."""
    x = X0.repeat(4000, 1)
    moved = ImportanceSampledEmulator(_exact_transition(), draws=1, moves=200)
    _assert_posterior(moved.sample_posterior(x, OBS, generator=torch.Generator().manual_seed(5)))
    still = ImportanceSampledEmulator(_exact_transition(), draws=1)
    out = still.sample_posterior(x, OBS, generator=torch.Generator().manual_seed(5))
    with pytest.raises(AssertionError):
        _assert_posterior(out)


def test_moves_need_the_simulated_system():
    class Bare:
        state_shape = (3,)

        def sample(self, x, generator=None):
            return x

    with pytest.raises(TypeError, match="moves=2 needs an emulator with the system"):
        ImportanceSampledEmulator(Bare(), moves=2)
    with pytest.raises(ValueError, match="moves"):
        ImportanceSampledEmulator(_exact_transition(), moves=-1)


@pytest.mark.parametrize("moves", [0, 3])
def test_proposal_after_the_exact_weights_uses_their_draws(moves):
    """After ``exact_log_likelihoods`` the proposal of a copy of particle i is one of i's
    kept draws (moves = 0), picked by its likelihood: over many copies the pick frequencies
    match the normalised likelihoods of i's draws. A row that is not a kept particle, or
    another observation, gets fresh draws. With moves the kept noise is moved: the result
    is no longer one of the kept draws, but stays a transition of its own particle."""
    em = ImportanceSampledEmulator(_exact_transition(), draws=5, moves=moves)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    ll = em.exact_log_likelihoods(x, OBS, 6, generator=g)
    kept = em._kept
    assert torch.allclose(
        ll,
        torch.logsumexp(OBS.log_likelihood(kept.states.reshape(24, 3)).reshape(4, 6), 1)
        - math.log(6),
    )
    copies = torch.cat([x[2:3].repeat(3000, 1), x[0:1], x[3:4] + 1.0])
    out = em.sample_posterior(copies, OBS, generator=g)
    assert em._kept is None  # one step's draws serve one step
    is_kept = (out[:, None, :] == kept.states[2][None]).all(-1)  # (3001 + 1, 6)
    if moves == 0:
        assert bool(is_kept[:3000].any(1).all())
        freq = is_kept[:3000].double().mean(0)
        w = torch.softmax(kept.log_likelihoods[2], 0)
        assert torch.allclose(freq, w, atol=4 * float((w * (1 - w) / 3000).sqrt().max()) + 1e-3)
        assert bool((out[3000:3001] == kept.states[0]).all(-1).any())
    else:
        assert float(is_kept[:3000].any(1).double().mean()) < 0.5
    # the shifted row was not kept: a fresh transition of it, not one of the kept draws
    assert not bool((out[-1] == kept.states.reshape(24, 3)).all(-1).any())
    # another observation object: no kept draws (they were used up anyway)
    em.exact_log_likelihoods(x, OBS, 6, generator=g)
    states = em._kept.states
    other = gf.Observation(OBS.y.clone(), OBS.operator, OBS.noise)
    out = em.sample_posterior(x, other, generator=g)
    assert not bool((out[:, None, :] == states).all(-1).any())


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


def test_without_shared_draws_fa_apf_is_the_first_oracle_bit_for_bit():
    """``shared_draws=False`` is the first oracle's scheme: FA-APF's exact weights from
    draws of their own (as FAAPF computes them for any emulator) and the proposal from
    fresh draws, the same numbers bit for bit as an emulator that has no
    ``exact_log_likelihoods``; with shared draws the particles differ."""

    class Hidden:  # the oracle without its exact_log_likelihoods
        def __init__(self, em):
            self.em, self.state_shape = em, em.state_shape

        def sample(self, x, *, generator=None):
            return self.em.sample(x, generator=generator)

        def predict_mean(self, x, *, generator=None):
            return self.em.predict_mean(x, generator=generator)

        def sample_posterior(self, x, obs, *, generator=None):
            return self.em.sample_posterior(x, obs, generator=generator)

    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(32, 3, generator=g, dtype=torch.float64)
    y = [OBS, gf.Observation(OBS.y + 0.3, OBS.operator, OBS.noise)]

    def run(em):
        f = gf.FAAPF(em, weights="exact", exact_samples=16, generator=5)
        return gf.assimilate(f, x0, y, progress=False).means

    first = ImportanceSampledEmulator(_exact_transition(), draws=8, shared_draws=False)
    plain = run(Hidden(ImportanceSampledEmulator(_exact_transition(), draws=8)))
    assert torch.equal(run(first), plain)
    shared = run(ImportanceSampledEmulator(_exact_transition(), draws=8))
    assert not torch.equal(shared, plain)
