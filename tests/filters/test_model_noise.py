"""FA-APF with additive model noise (``Jittered``; docs/method.md#model-noise): on the
linear-Gaussian model, the jittered transition N(Ax + b, Q + q²I) is again linear-Gaussian,
so the proposal and the whole filter have a closed form to meet."""

from __future__ import annotations

import pytest
import torch
from azula.linalg.covariance import DiagonalCovariance, IsotropicCovariance
from conftest import make_lg_model
from test_fa_apf import compare_with_kalman, kalman_setup

from genfilter.emulators.jittered import Jittered
from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.filters.base import assimilate
from genfilter.filters.fa_apf import FAAPF
from genfilter.filters.kalman import KalmanFilter
from genfilter.observations import (
    Coarsen,
    Lambda,
    Observation,
    Select,
    isotropic_noise,
    noise_matrix,
)

Q_STD = 0.6


def _lg():
    m = make_lg_model()
    return LinearGaussianEmulator(m.A, m.b, m.Q, iterations=4)


def _obs():
    return Observation(
        torch.tensor([0.3, -0.5], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )


def test_jittered_proposal_is_the_optimal_proposal_of_the_jittered_model():
    """z from the emulator's guided proposal under the widened observation, then the
    Gaussian conditional by Matheron's rule: the draws match the closed-form optimal
    proposal of N(Ax + b, Q + q²I) (mean within 5 MC standard errors, covariance within 5 %);
    without the second stage (z alone) the covariance is off by far more."""
    model = make_lg_model()
    n = 20000
    em = LinearGaussianEmulator(model.A, model.b, model.Q, iterations=4)
    jit = Jittered(em, Q_STD)
    x0 = torch.randn(1, model.D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0 = x0.expand(n, -1).clone()
    obs = _obs()
    draws = jit.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
    wide = model.Q + Q_STD**2 * torch.eye(model.D, dtype=torch.float64)
    m, P = LinearGaussianEmulator(model.A, model.b, wide).exact_posterior(x0[:1], obs)
    se = torch.sqrt(torch.diagonal(P) / n)
    assert ((draws.mean(0) - m[0]).abs() <= 5 * se).all()
    scale = torch.sqrt(torch.outer(torch.diagonal(P), torch.diagonal(P)))
    assert ((torch.cov(draws.T) - P).abs() / scale).max() < 0.05
    z = em.sample_posterior(x0, jit.widen(obs), generator=torch.Generator().manual_seed(2))
    assert ((torch.cov(z.T) - P).abs() / scale).max() > 0.2


def test_fa_apf_with_model_noise_tracks_the_kalman_filter_of_the_jittered_model():
    """FA-APF (gaussian weights, N = 2000, no inflation) on Jittered(emulator, q) against
    the Kalman filter with Q + q²I: the tolerances of the noise-free Kalman test."""
    model, truth, obs, m0, P0, _ = kalman_setup()
    wide = model.Q + Q_STD**2 * torch.eye(model.D, dtype=torch.float64)
    kf = KalmanFilter(model.A, model.b, wide).filter(m0, P0, obs)
    N = 2000
    g = torch.Generator().manual_seed(3)
    x0 = (
        m0 + torch.randn(N, model.D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(P0).T
    )
    em = LinearGaussianEmulator(model.A, model.b, model.Q, steps=64, iterations=4)
    f = FAAPF(Jittered(em, Q_STD), weights="gaussian", ess_interval=None, generator=1)
    run = assimilate(f, x0, obs, truth=truth, progress=False)
    mean_err, var_err, ll_err = compare_with_kalman(run, kf)
    assert mean_err < 0.25
    assert var_err < 0.2
    assert ll_err < 1.0


def test_widened_noise_keeps_its_structure():
    """Σ_y + q² H Hᵀ: isotropic and diagonal noise stay so for a selection (H Hᵀ = I); an
    averaging operator gives the dense matrix; q = 0 changes nothing."""
    em = _lg()
    jit = Jittered(em, 0.5)
    iso = jit.widen(_obs())
    assert isinstance(iso.noise, IsotropicCovariance)
    assert float(iso.noise.lmbda) == pytest.approx(0.25 + 0.25)
    diag = Observation(
        torch.tensor([0.3, -0.5], dtype=torch.float64),
        Select([0, 2]),
        DiagonalCovariance(torch.tensor([0.1, 0.2], dtype=torch.float64)),
    )
    assert torch.allclose(jit.widen(diag).noise.D, torch.tensor([0.35, 0.45], dtype=torch.float64))
    # a 2 x 2 field coarsened by 2: one value, the mean of 4, H Hᵀ = 1/4
    jit4 = Jittered(type("E", (), {"state_shape": (2, 2)})(), 0.5)
    coarse = Observation(torch.tensor([0.0]), Coarsen(2), isotropic_noise(0.1))
    R = noise_matrix(jit4.widen(coarse).noise, 1)
    assert float(R) == pytest.approx(0.01 + 0.25 / 4)
    assert float(Jittered(em, 0.0).widen(_obs()).noise.lmbda) == pytest.approx(0.25)


def test_model_noise_needs_a_linear_operator():
    em = _lg()
    obs = Observation(
        torch.tensor([0.3], dtype=torch.float64),
        Lambda(lambda x: x[:, :1] ** 2),
        isotropic_noise(0.5),
    )
    with pytest.raises(ValueError, match="linear observation operator"):
        Jittered(em, 0.5).widen(obs)


def test_weights_see_the_observation_through_the_model_noise():
    """Per particle, gaussian weights are the exact predictive log-density
    N(y; H(Ax + b), Σ_y + H(Q + q²I)Hᵀ) and dirac weights N(y; H(Ax + b), Σ_y + q² H Hᵀ)."""
    model = make_lg_model()
    em = LinearGaussianEmulator(model.A, model.b, model.Q, iterations=4)
    x = torch.randn(6, model.D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    obs = _obs()
    H = torch.eye(model.D, dtype=torch.float64)[[0, 2]]
    R = 0.25 * torch.eye(2, dtype=torch.float64)
    q2I = Q_STD**2 * torch.eye(model.D, dtype=torch.float64)
    mean_y = (x @ model.A.T + model.b) @ H.T
    for weights, cov in (
        ("gaussian", R + H @ (model.Q + q2I) @ H.T),
        ("dirac", R + H @ q2I @ H.T),
    ):
        f = FAAPF(Jittered(em, Q_STD), weights=weights, ess_interval=None, generator=1)
        got = f.log_likelihoods(x, obs)
        want = torch.distributions.MultivariateNormal(mean_y, cov).log_prob(obs.y)
        # the emulator's predictive mean comes from its sampler (64 steps): 0.01-0.03 nats;
        # leaving out q² moves these log-densities by 0.1 to 1 nat
        assert torch.allclose(got, want, atol=0.05), (weights, (got - want).abs().max())


def test_a_config_gives_fa_apf_model_noise():
    """filter.options.jitter of fa-apf wraps the emulator; a bad value names the field."""
    from genfilter.experiments.config import ConfigError, parse_config
    from genfilter.experiments.runner import build_emulator, build_filter, build_twin_setup

    raw = {
        "name": "t",
        "setup": "l63-a",
        "emulator": "true",
        "filter": {"method": "fa-apf", "particles": 8, "options": {"jitter": 0.3}},
    }
    cfg = parse_config(raw)
    setup = build_twin_setup(cfg)
    f = build_filter(cfg, build_emulator(cfg, setup), setup, torch.Generator())
    assert isinstance(f.emulator, Jittered) and f.emulator.std == 0.3
    raw["filter"]["options"]["jitter"] = -1
    with pytest.raises(ConfigError, match="filter.options.jitter"):
        parse_config(raw)
