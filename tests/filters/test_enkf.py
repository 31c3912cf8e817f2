"""Properties of the perturbed-observation EnKF (Burgers, van Leeuwen & Evensen 1998;
docs/method.md#enkf)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_lg_model, simulate_lg
from exact_linear import ExactLinearEmulator

from genfilter.filters.base import assimilate
from genfilter.filters.enkf import EnKF, ensemble_kalman_update
from genfilter.filters.kalman import KalmanFilter
from genfilter.observations import (
    Observation,
    Select,
    diagonal_noise,
    full_noise,
    isotropic_noise,
    synthetic_observations,
)


def test_enkf_converges_to_the_kalman_filter():
    """(d) With N = 20000 the EnKF mean is within 0.1 KF sd and its variances within
    10 % of the Kalman filter over 20 steps (MC sd of a mean ≈ 0.007 sd, of a variance
    ≈ 0.01; perturbed observations add sampling noise of the same order)."""
    model = make_lg_model()
    truth = simulate_lg(model, 20)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(0.5), generator=torch.Generator().manual_seed(2)
    )
    m0, P0 = torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    kf = KalmanFilter(model.A, model.b, model.Q).filter(m0, P0, obs)
    N = 20000
    x0 = torch.randn(N, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    run = assimilate(
        EnKF(ExactLinearEmulator(model.A, model.b, model.Q), generator=4), x0, obs, progress=False
    )
    sd = torch.sqrt(torch.diagonal(kf.covs, dim1=1, dim2=2))
    var = torch.stack([torch.diagonal(torch.cov(p.T)) for p in run.particles])
    mean_err = ((run.means - kf.means).abs() / sd).max().item()
    var_err = (var / sd**2 - 1).abs().max().item()
    print(f"EnKF vs KF: mean err {mean_err:.3f} sd, var err {var_err:.3f}")
    assert mean_err < 0.1 and var_err < 0.1


@pytest.mark.parametrize("noise_kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("N", [5, 50])
def test_analysis_equals_dense_kalman_gain_formula(noise_kind, N):
    """The ensemble-space (M > N) and observation-space (M ≤ N) updates both equal
    x_i + K (y + ε_i − H x_i) with K = A Ỹᵀ (Ỹ Ỹᵀ + Σ_y)⁻¹ formed densely (Woodbury)."""
    g = torch.Generator().manual_seed(0)
    D, M = 12, 8
    xf = torch.randn(N, D, generator=g, dtype=torch.float64)
    idx = list(range(0, D, D // M))[:M]
    C = torch.randn(M, M, generator=g, dtype=torch.float64)
    noise = {
        "isotropic": isotropic_noise(0.7),
        "diagonal": diagonal_noise(torch.rand(M, generator=g, dtype=torch.float64) + 0.1),
        "full": full_noise(C @ C.T + torch.eye(M, dtype=torch.float64)),
    }[noise_kind]
    obs = Observation(torch.randn(M, generator=g, dtype=torch.float64), Select(idx), noise)
    xa = ensemble_kalman_update(xf, obs, generator=torch.Generator().manual_seed(5))
    # reference with the same perturbations
    eps = obs.sample_noise((N,), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps = eps - eps.mean(0)
    A = (xf - xf.mean(0)) / math.sqrt(N - 1)
    Y = xf[:, idx]
    Yt = (Y - Y.mean(0)) / math.sqrt(N - 1)
    from genfilter.observations import noise_matrix

    R = noise_matrix(noise, M).double()
    K = A.T @ Yt @ torch.linalg.inv(Yt.T @ Yt + R)
    ref = xf + (obs.y + eps - Y) @ K.T
    assert torch.allclose(xa, ref, atol=1e-10)


def test_inflation_scales_analysis_anomalies():
    model = make_lg_model()
    em = ExactLinearEmulator(model.A, model.b, model.Q)
    x0 = torch.randn(40, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    obs = Observation(torch.zeros(2, dtype=torch.float64), Select([0, 2]), isotropic_noise(1.0))
    e1, _ = EnKF(em, generator=1).step(EnKF(em).init(x0), obs)
    e2, info = EnKF(em, inflation=1.5, generator=1).step(EnKF(em).init(x0), obs)
    assert torch.allclose(
        e2.particles - e2.particles.mean(0), 1.5 * (e1.particles - e1.particles.mean(0))
    )
    assert info.spread_analysis < info.spread_forecast * 1.5


def test_bad_hyperparameters():
    model = make_lg_model()
    em = ExactLinearEmulator(model.A, model.b, model.Q)
    with pytest.raises(ValueError, match="inflation"):
        EnKF(em, inflation=0.9)
    with pytest.raises(TypeError, match="sample"):
        EnKF(object())
