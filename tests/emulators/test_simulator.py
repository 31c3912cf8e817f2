"""Properties of genfilter.emulators.simulator (the true dynamics behind the Emulator protocol)."""

import pytest
import torch

from genfilter.emulators.base import Emulator
from genfilter.emulators.simulator import SimulatorEmulator
from genfilter.systems.lorenz63 import StochasticLorenz63
from genfilter.systems.lorenz96 import Lorenz96
from genfilter.systems.navier_stokes import NavierStokes2D


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def l63():
    return StochasticLorenz63()


@pytest.fixture(scope="module")
def x63(l63):
    return l63.attractor_states(12, _gen(0), burn_in=2.0)


def test_is_an_emulator(l63):
    emulator = SimulatorEmulator(l63, chunk_size=5, mean_samples=8)
    assert isinstance(emulator, SimulatorEmulator)
    assert isinstance(emulator, Emulator)
    assert emulator.state_shape == (3,)
    assert (emulator.chunk_size, emulator.mean_samples) == (5, 8)
    assert SimulatorEmulator(NavierStokes2D(resolution=32)).state_shape == (32, 32)


@pytest.mark.parametrize(
    "system",
    [StochasticLorenz63(), Lorenz96(noise_std=0.3), NavierStokes2D(resolution=32, interval=0.01)],
    ids=["l63", "l96", "ns"],
)
def test_sample_is_one_system_step(system):
    x = system.attractor_states(4, _gen(1), burn_in=0.1)
    sample = SimulatorEmulator(system).sample(x, generator=_gen(2))
    assert sample.shape == x.shape
    assert torch.equal(sample, system.step(x, 1, _gen(2)))


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_chunking_does_not_change_sample_or_mean(l63, x63, chunk_size):
    x = x63[:7]
    whole = SimulatorEmulator(l63, mean_samples=3)
    chunked = SimulatorEmulator(l63, chunk_size=chunk_size, mean_samples=3)
    assert torch.equal(chunked.sample(x, generator=_gen(3)), whole.sample(x, generator=_gen(3)))
    assert torch.equal(
        chunked.predict_mean(x, generator=_gen(4)), whole.predict_mean(x, generator=_gen(4))
    )


def test_predict_mean_is_the_monte_carlo_mean(l63, x63):
    # exactly the mean of mean_samples draws of the transition ...
    emulator = SimulatorEmulator(l63, mean_samples=16)
    mean = emulator.predict_mean(x63, generator=_gen(5))
    draws = l63.step(x63.repeat(16, 1), 1, _gen(5)).reshape(16, 12, 3)
    torch.testing.assert_close(mean, draws.mean(0))
    # ... and close to E[x^{k+1} | x^k] (a 2048-draw estimate), within the MC error
    big = l63.step(x63.repeat(2048, 1), 1, _gen(6)).reshape(2048, 12, 3)
    estimate = SimulatorEmulator(l63, mean_samples=64).predict_mean(x63, generator=_gen(7))
    stderr = (big.std(0) ** 2 / 64 + big.std(0) ** 2 / 2048).sqrt()
    assert ((estimate - big.mean(0)).abs() < 5 * stderr + 1e-4).all()


def test_predict_mean_of_a_deterministic_system_is_the_step():
    system = Lorenz96()
    x = system.attractor_states(3, _gen(8), burn_in=1.0)
    torch.testing.assert_close(
        SimulatorEmulator(system, mean_samples=5).predict_mean(x), system.step(x, 1)
    )


def test_sample_posterior_is_refused_with_a_clear_error(l63, x63):
    with pytest.raises(
        TypeError, match="cannot sample the optimal proposal.*DiffusionEmulator.*BPF, EnKF"
    ):
        SimulatorEmulator(l63).sample_posterior(x63, obs=None)


def test_bad_inputs_raise_errors_naming_x_prev(l63):
    emulator = SimulatorEmulator(l63)
    with pytest.raises(ValueError, match="x_prev"):
        emulator.sample(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="x_prev"):
        emulator.predict_mean(torch.zeros(3))
    with pytest.raises(ValueError, match="x_prev"):
        emulator.sample(torch.tensor([[0.0, float("inf"), 1.0]]))
    with pytest.raises(TypeError, match="x_prev"):
        emulator.sample([[0.0, 1.0, 2.0]])
    with pytest.raises(TypeError, match="x_prev"):
        emulator.sample(torch.zeros(2, 3, dtype=torch.long))


def test_bad_configuration_raises(l63):
    with pytest.raises(ValueError, match="chunk_size"):
        SimulatorEmulator(l63, chunk_size=0)
    with pytest.raises(ValueError, match="mean_samples"):
        SimulatorEmulator(l63, mean_samples=0)
