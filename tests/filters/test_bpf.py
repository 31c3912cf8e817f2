"""Properties of the bootstrap particle filter (docs/method.md#bootstrap-particle-filter)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lg_model, simulate_lg
from exact_linear import ExactLinearEmulator

from genfilter.filters.base import assimilate
from genfilter.filters.bpf import BootstrapPF
from genfilter.filters.kalman import KalmanFilter
from genfilter.observations import Observation, Select, isotropic_noise, synthetic_observations


def test_bpf_approaches_the_kalman_filter_and_its_evidence():
    """N = 20000, observation noise std 1 (ESS stays in the thousands): weighted mean within
    0.15 KF sd at every step and log-evidence within 0.5 nat over 20 steps."""
    model = make_lg_model()
    truth = simulate_lg(model, 20)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(1.0), generator=torch.Generator().manual_seed(2)
    )
    m0, P0 = torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    kf = KalmanFilter(model.A, model.b, model.Q).filter(m0, P0, obs)
    x0 = torch.randn(20000, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    run = assimilate(
        BootstrapPF(ExactLinearEmulator(model.A, model.b, model.Q), generator=4),
        x0,
        obs,
        progress=False,
    )
    sd = torch.sqrt(torch.diagonal(kf.covs, dim1=1, dim2=2))
    mean_err = ((run.means - kf.means).abs() / sd).max().item()
    ll_err = abs(run.log_evidence - kf.log_likelihood)
    print(f"BPF vs KF: mean err {mean_err:.3f} sd, loglik err {ll_err:.3f}")
    assert mean_err < 0.15 and ll_err < 0.5


def test_resampling_threshold():
    """κ = 0: never resample (weights accumulate); κ = 1: resample at every observed step."""
    model = make_lg_model()
    em = ExactLinearEmulator(model.A, model.b, model.Q)
    x0 = torch.randn(100, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    obs = Observation(torch.zeros(2, dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5))
    f0 = BootstrapPF(em, resample_threshold=0.0, generator=1)
    e, info = f0.step(f0.init(x0), obs)
    assert not info.resampled and not e.is_uniform()
    assert abs(torch.logsumexp(e.log_weights, 0).item()) < 1e-10
    f1 = BootstrapPF(em, resample_threshold=1.0, generator=1)
    e, info = f1.step(f1.init(x0), obs)
    assert info.resampled and e.is_uniform()


def test_all_incompatible_particles_raise():
    model = make_lg_model()
    em = ExactLinearEmulator(model.A, model.b, model.Q)
    x0 = torch.zeros(10, 4, dtype=torch.float64)
    from genfilter.observations import Lambda

    op = Lambda(lambda x: x[:, :1] + 1e300 * 1e300, "inf")
    obs = Observation(torch.zeros(1, dtype=torch.float64), op, isotropic_noise(1.0))
    f = BootstrapPF(em, generator=0)
    with pytest.raises(ValueError, match="no particle is compatible"):
        f.step(f.init(x0), obs)


def test_bad_hyperparameters():
    model = make_lg_model()
    em = ExactLinearEmulator(model.A, model.b, model.Q)
    with pytest.raises(ValueError, match="resample_threshold"):
        BootstrapPF(em, resample_threshold=2.0)
    with pytest.raises(ValueError, match="resampling"):
        BootstrapPF(em, resampling="magic")
