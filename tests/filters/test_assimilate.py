"""Properties of the assimilation loop: metrics, xarray output, checkpoint and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import make_lg_model, simulate_lg
from exact_linear import ExactLinearEmulator

from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.filters.base import Ensemble, assimilate
from genfilter.filters.enkf import EnKF
from genfilter.filters.fa_apf import FAAPF
from genfilter.metrics import skill
from genfilter.observations import Select, isotropic_noise, synthetic_observations


def setup(K=6):
    model = make_lg_model()
    truth = simulate_lg(model, K)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(0.5), generator=torch.Generator().manual_seed(2)
    )
    x0 = torch.randn(32, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return model, truth, obs, x0


def test_metrics_and_xarray():
    model, truth, obs, x0 = setup()
    obs[2] = None  # a forecast-only step
    run = assimilate(
        EnKF(ExactLinearEmulator(model.A, model.b, model.Q), generator=0),
        x0,
        obs,
        truth=truth,
        progress=False,
        variable_axis=0,
    )
    assert run.metrics["skill"].shape == (6, 4)
    assert torch.allclose(
        run.metrics["skill"][3], skill(run.particles[3], truth[3], variable_axis=0)
    )
    ds = run.to_xarray(state_dims=["component"])
    assert isinstance(ds, xr.Dataset)
    assert ds["particles"].dims == ("run", "step", "member", "component")
    # the run file holds the skill averaged over variables, per step
    assert np.allclose(ds["skill"].values[0], run.metrics["skill"].mean(-1).numpy())
    s = run.summary(burn_in=1)
    assert set(s) >= {"skill", "spread", "ssr", "crps"}


def test_resume_from_checkpoint_is_identical(tmp_path):
    """A run stopped after 3 steps and resumed from its checkpoint gives the same
    particles, bit for bit, as an uninterrupted run with the same seed."""
    model, truth, obs, x0 = setup()
    em = LinearGaussianEmulator(model.A, model.b, model.Q, steps=4, iterations=2)
    full = assimilate(FAAPF(em, generator=7), x0, obs, truth=truth, progress=False)

    ck = tmp_path / "run.pt"
    assimilate(FAAPF(em, generator=7), x0, obs[:3], truth=truth[:3], progress=False, checkpoint=ck)
    resumed = assimilate(
        FAAPF(em, generator=7), x0, obs, truth=truth, progress=False, checkpoint=ck
    )
    assert torch.equal(resumed.particles, full.particles)
    assert torch.equal(resumed.metrics["crps"], full.metrics["crps"])
    assert [i.inflation for i in resumed.infos] == [i.inflation for i in full.infos]


def test_truth_shape_is_checked():
    model, truth, obs, x0 = setup()
    with pytest.raises(ValueError, match="truth must have shape"):
        assimilate(
            EnKF(ExactLinearEmulator(model.A, model.b, model.Q)),
            x0,
            obs,
            truth=truth[:3],
            progress=False,
        )


def test_non_finite_particles_are_an_error_naming_the_step():
    class Exploding:
        state_shape = (4,)
        generator = None

        def init(self, particles):
            return Ensemble(
                particles,
                torch.full(
                    (particles.shape[0],),
                    -torch.log(torch.tensor(32.0)).item(),
                    dtype=torch.float64,
                ),
            )

        def step(self, ens, obs):
            from genfilter.filters.base import StepInfo

            return Ensemble(ens.particles * torch.inf, ens.log_weights), StepInfo(ess=32.0)

    _model, _truth, obs, x0 = setup()
    with pytest.raises(FloatingPointError, match="Exploding at step 1 of"):  # steps count from 1
        assimilate(Exploding(), x0, obs, progress=False)
