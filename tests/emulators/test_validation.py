"""The emulator validation distinguishes a perfect emulator from a wrong one."""

from __future__ import annotations

import pytest
import torch

from genfilter.emulators.simulator import SimulatorEmulator
from genfilter.emulators.validation import (
    energy_distance,
    one_step_validation,
    rollout_validation,
    validation_table,
)
from genfilter.systems.lorenz63 import StochasticLorenz63


class Shifted:
    """The true model plus a bias and extra noise: a deliberately wrong emulator."""

    def __init__(self, system, shift, noise):
        self.system, self.shift, self.noise = system, shift, noise
        self.state_shape = (3,)

    def sample(self, x, *, generator=None):
        out = self.system.step(x, 1, generator)
        return (
            out
            + self.shift
            + self.noise * torch.randn(out.shape, generator=generator, dtype=out.dtype)
        )


def test_energy_distance_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g, dtype=torch.float64)
    y = torch.randn(400, 2, generator=g, dtype=torch.float64)
    assert abs(energy_distance(x, y)) < 0.05
    assert energy_distance(x, y + 1.0) > 0.5
    # 1D closed form for point masses: ED(δ_a, δ_b) = 2|a − b|
    a = torch.zeros(5, 1, dtype=torch.float64)
    assert abs(energy_distance(a, a + 3.0) - 6.0) < 1e-12


@pytest.fixture(scope="module")
def lorenz63_check():
    """Lorenz-63, 4 attractor states, and the one-step check of the true model against
    itself (200 samples per state, generator 2): shared by the tests below."""
    system = StochasticLorenz63()
    g = torch.Generator().manual_seed(1)
    states = system.attractor_states(4, generator=g, burn_in=2.0).double()
    perfect = one_step_validation(
        SimulatorEmulator(system), system, states, samples=200, generator=2
    )
    return system, states, perfect


def test_perfect_emulator_sits_at_the_noise_floor_and_a_wrong_one_does_not(lorenz63_check):
    system, states, perfect = lorenz63_check
    wrong = one_step_validation(Shifted(system, 0.5, 0.5), system, states, samples=200, generator=2)
    assert perfect.energy_distance < 3 * perfect.energy_distance_floor + 0.02
    assert wrong.energy_distance > 5 * perfect.energy_distance
    assert abs(perfect.variance_ratio - 1) < 0.3 and wrong.variance_ratio > 1.3
    assert perfect.mean_error < 0.3 < wrong.mean_error


def test_energy_distance_standard_errors_separate_a_wrong_emulator_from_noise():
    """12 states: the wrong emulator's distance varies from state to state (its shift is
    measured in each state's own transition sd), so a few states do not resolve it."""
    system = StochasticLorenz63()
    states = system.attractor_states(
        12, generator=torch.Generator().manual_seed(5), burn_in=2.0
    ).double()
    perfect = one_step_validation(
        SimulatorEmulator(system), system, states, samples=100, generator=6
    )
    wrong = one_step_validation(Shifted(system, 0.5, 0.5), system, states, samples=100, generator=6)
    for r in (perfect, wrong):
        eds = torch.tensor(r.energy_distance_by_state, dtype=torch.float64)
        assert eds.numel() == states.shape[0]
        assert abs(float(eds.mean()) - r.energy_distance) < 1e-12
        # the standard error against the textbook formula, computed independently
        mean = sum(r.energy_distance_by_state) / len(eds)
        var = sum((e - mean) ** 2 for e in r.energy_distance_by_state) / (len(eds) - 1)
        assert abs(r.energy_distance_se - (var / len(eds)) ** 0.5) < 1e-12
    excess, se = perfect.excess_energy_distance
    assert abs(excess) < 3 * se  # a perfect emulator adds nothing above sampling noise
    excess, se = wrong.excess_energy_distance
    assert excess > 3 * se > 0
    table = validation_table(wrong)
    assert f"{wrong.energy_distance:.4f} ± {wrong.energy_distance_se:.4f}" in table
    assert f"| emulator minus floor, paired by state | {excess:.4f} ± {se:.4f} |" in table


def test_rollout_climatology_and_table():
    system = StochasticLorenz63()
    g = torch.Generator().manual_seed(3)
    states = system.attractor_states(8, generator=g, burn_in=2.0).double()
    roll = rollout_validation(SimulatorEmulator(system), system, states, length=60, generator=4)
    assert roll.finite and roll.acf_true.shape == (4, 3)
    assert ((roll.mean_true - roll.mean_emulator).abs() < 0.6 * roll.std_true).all()
    assert (roll.acf_true[0] > roll.acf_true[-1]).all()  # decorrelates with lag
    text = validation_table(
        one_step_validation(SimulatorEmulator(system), system, states[:2], samples=50), roll
    )
    assert "energy distance" in text and "autocorrelation lag 1" in text


class Evened:
    """The true model's draws with each component's deviations rescaled to the mean variance
    over the components: the right total spread in the wrong place."""

    def __init__(self, system):
        self.system = system
        self.state_shape = (3,)

    def sample(self, x, *, generator=None):
        out = self.system.step(x, 1, generator)
        dev = out - out.mean(0)
        var = dev.var(0)
        return out.mean(0) + dev * (var.mean() / var).sqrt()


def test_the_two_variance_ratios_separate_total_spread_from_its_distribution(lorenz63_check):
    system, states, perfect = lorenz63_check
    evened = one_step_validation(Evened(system), system, states, samples=200, generator=2)
    noisy = one_step_validation(Shifted(system, 0.0, 1.0), system, states, samples=200, generator=2)
    # a perfect emulator: both ratios near 1, and the floor statistic near its own value
    assert abs(perfect.total_variance_ratio - 1) < 0.15
    assert abs(perfect.variance_ratio - perfect.variance_ratio_floor) < 0.2
    assert abs(perfect.variance_ratio_floor - 1) < 0.2
    # the evened spread keeps the total (up to sampling) but not the per-component ratio
    assert abs(evened.total_variance_ratio - 1) < 0.15
    assert evened.variance_ratio > perfect.variance_ratio_floor + 0.3
    # extra noise raises both
    assert noisy.total_variance_ratio > 1.3 and noisy.variance_ratio > 1.3
