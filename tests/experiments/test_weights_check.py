"""The weights diagnostic: on a linear-Gaussian model, where the moment-matched
("gaussian") weights are the exact predictive likelihood, they sit at the Monte-Carlo floor
of the comparison, and the dirac weights, which ignore the transition's covariance, do not."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lg_model
from exact_linear import ExactLinearEmulator

from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.experiments.weights_check import exact_log_likelihoods, weights_diagnostic
from genfilter.observations import Observation, Select, isotropic_noise


class LinearSystem(ExactLinearEmulator):
    def step(self, x, n_intervals=1, generator=None):
        for _ in range(n_intervals):
            x = self.sample(x, generator=generator)
        return x


def make_obs(x_true):
    g = torch.Generator().manual_seed(int(1e6 * x_true[0].abs()) % 1000)
    y = x_true[[0, 2]] + 0.5 * torch.randn(2, generator=g, dtype=x_true.dtype)
    return Observation(y, Select([0, 2]), isotropic_noise(0.5))


def test_monte_carlo_log_likelihoods_are_the_kalman_predictive():
    m = make_lg_model()
    system = LinearSystem(m.A, m.b, m.Q)
    em = LinearGaussianEmulator(m.A, m.b, m.Q)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    obs = Observation(
        torch.tensor([0.4, -0.1], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )
    ll = exact_log_likelihoods(system, x, obs, 40_000, torch.Generator().manual_seed(0))
    mean, cov = em.exact_predictive(x, obs)
    want = torch.distributions.MultivariateNormal(mean, cov).log_prob(obs.y)
    assert ll.shape == (5,)
    assert (ll - want).abs().max() < 0.02


def test_gaussian_weights_sit_at_the_floor_and_dirac_weights_do_not():
    m = make_lg_model()
    system = LinearSystem(m.A, m.b, m.Q)
    em = LinearGaussianEmulator(m.A, m.b, m.Q, steps=32, iterations=4)
    states = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = weights_diagnostic(
        em,
        system,
        states,
        make_obs,
        spread=1.0,
        particles=32,
        draws=4000,
        emulator_draws=512,
        generator=2,
        progress=False,
    )
    tv = r.total_variation
    floor = tv["exact, 2nd draw"]
    assert floor < 0.05
    assert tv["gaussian"] < 1.5 * floor + 0.01
    assert tv["emulator MC"] < 0.1
    assert tv["dirac"] > 0.1 and tv["dirac"] > 4 * tv["gaussian"]
    # dirac weights are too peaked: a smaller ESS than the exact weights'
    assert r.ess["dirac"] < 0.8 * r.ess["exact"]
    assert r.ess["dirac, ESS interval"] >= r.ess["dirac"]


def test_bad_arguments_name_the_field():
    m = make_lg_model()
    system = LinearSystem(m.A, m.b, m.Q)
    em = LinearGaussianEmulator(m.A, m.b, m.Q, steps=8)
    states = torch.zeros(1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="spread"):
        weights_diagnostic(em, system, states, make_obs, spread=-1.0, progress=False)
    with pytest.raises(ValueError, match="particles"):
        weights_diagnostic(em, system, states, make_obs, spread=1.0, particles=1, progress=False)
