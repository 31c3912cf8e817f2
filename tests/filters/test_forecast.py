"""The free forecast ensemble follows the Kalman prediction (no update)."""

from __future__ import annotations

import torch
from conftest import make_lg_model
from exact_linear import ExactLinearEmulator

from genfilter.filters.base import assimilate
from genfilter.filters.forecast import Forecast
from genfilter.filters.kalman import KalmanFilter
from genfilter.observations import Observation, Select, isotropic_noise


def test_forecast_ignores_observations_and_matches_kalman_prediction():
    model = make_lg_model()
    N, K = 20000, 10
    x0 = torch.randn(N, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    obs = [
        Observation(
            torch.full((2,), 50.0, dtype=torch.float64), Select([0, 2]), isotropic_noise(0.1)
        )
    ] * K
    run = assimilate(
        Forecast(ExactLinearEmulator(model.A, model.b, model.Q), generator=1),
        x0,
        obs,
        progress=False,
    )
    kf = KalmanFilter(model.A, model.b, model.Q).filter(
        torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64), [None] * K
    )
    sd = torch.sqrt(torch.diagonal(kf.covs, dim1=1, dim2=2))
    assert ((run.means - kf.means).abs() / sd).max() < 0.05
    var = torch.stack([torch.diagonal(torch.cov(p.T)) for p in run.particles])
    assert (var / sd**2 - 1).abs().max() < 0.05
