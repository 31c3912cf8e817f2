"""The proposal diagnostic recovers the closed-form optimal proposal on a linear-Gaussian
model and flags a proposal that ignores the observation."""

from __future__ import annotations

import torch
from conftest import make_lg_model
from exact_linear import ExactLinearEmulator

from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.experiments.proposal import exact_proposal_moments, proposal_diagnostic
from genfilter.observations import Observation, Select, isotropic_noise


class LinearSystem(ExactLinearEmulator):
    def step(self, x, n_intervals=1, generator=None):
        for _ in range(n_intervals):
            x = self.sample(x, generator=generator)
        return x


class Unguided:
    """A proposal that ignores y (the transition itself)."""

    def __init__(self, em):
        self.em = em

    def sample_posterior(self, x, obs, *, generator=None):
        return self.em.sample(x, generator=generator)


def make_obs(x_true):
    y = x_true[[0, 2]] + 0.5 * torch.randn(
        2,
        generator=torch.Generator().manual_seed(int(1e6 * x_true[0].abs()) % 1000),
        dtype=x_true.dtype,
    )
    return Observation(y, Select([0, 2]), isotropic_noise(0.5))


def test_importance_sampling_reference_matches_closed_form():
    m = make_lg_model()
    system = LinearSystem(m.A, m.b, m.Q)
    em = LinearGaussianEmulator(m.A, m.b, m.Q)
    x = torch.tensor([0.5, -0.3, 0.2, 1.0], dtype=torch.float64)
    obs = Observation(
        torch.tensor([0.4, -0.1], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )
    mean, var, ess = exact_proposal_moments(
        system, x, obs, draws=100_000, generator=torch.Generator().manual_seed(0)
    )
    m_exact, P = em.exact_posterior(x[None], obs)
    assert ess > 10_000
    assert ((mean - m_exact[0]).abs() / torch.diagonal(P).sqrt()).max() < 0.05
    assert ((var / torch.diagonal(P)) - 1).abs().max() < 0.05


def test_diagnostic_separates_a_good_proposal_from_an_unguided_one():
    m = make_lg_model()
    system = LinearSystem(m.A, m.b, m.Q)
    em = LinearGaussianEmulator(m.A, m.b, m.Q, steps=32, iterations=4)
    states = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    good = proposal_diagnostic(
        em, system, states, make_obs, samples=2000, draws=50_000, generator=2, progress=False
    )
    bad = proposal_diagnostic(
        Unguided(em),
        system,
        states,
        make_obs,
        samples=2000,
        draws=50_000,
        generator=2,
        progress=False,
    )
    assert good.mean_error.max() < 0.15 and (good.variance_ratio - 1).abs().max() < 0.1
    assert (
        bad.variance_ratio[[0, 2]].min() > 1.3
    )  # ignoring y over-disperses the observed components
