"""Properties of genfilter.systems.lorenz96 (Lorenz-96, RK4, optional additive noise)."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from genfilter.systems.lorenz96 import Lorenz96, lorenz96_drift


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def states():
    """8 attractor states (float64) of the default system."""
    return Lorenz96().attractor_states(8, _gen(0), burn_in=5.0, dtype=torch.float64)


def test_defaults():
    s = Lorenz96()
    assert (s.dim, s.forcing, s.dt, s.interval, s.noise_std) == (40, 8.0, 0.01, 0.05, 0.0)
    assert s.state_shape == (40,) and s.steps_per_interval == 5


def test_drift_is_lorenz96_and_advection_conserves_energy():
    x = torch.randn(3, 40, generator=_gen(1), dtype=torch.float64)
    i = torch.arange(40)
    expected = (x[:, (i + 1) % 40] - x[:, (i - 2) % 40]) * x[:, (i - 1) % 40] - x + 8.0
    torch.testing.assert_close(lorenz96_drift(x, 8.0), expected)
    # the quadratic term is energy-conserving: x . f = -|x|^2 when F = 0
    torch.testing.assert_close((x * lorenz96_drift(x, 0.0)).sum(-1), -(x * x).sum(-1))


def _reference(x0: torch.Tensor, T: float) -> np.ndarray:
    def f(t, y):
        return lorenz96_drift(torch.from_numpy(y), 8.0).numpy()

    return np.stack(
        [
            solve_ivp(f, (0.0, T), x.numpy(), method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
            for x in x0
        ]
    )


def test_rk4_fourth_order_and_agrees_with_solve_ivp(states):
    T = 0.5
    ref = _reference(states[:4], T)
    hs = np.array([0.025, 0.0125, 0.00625])
    errors = np.array(
        [np.abs(Lorenz96(dt=h, interval=T).step(states[:4], 1).numpy() - ref).max() for h in hs]
    )
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert 3.6 <= slope <= 4.6, (slope, errors)
    # the default step (dt = 0.01) agrees with DOP853 at tight tolerance
    default = Lorenz96(interval=T).step(states[:4], 1).numpy()
    assert np.abs(default - ref).max() < 1e-4  # measured 2.4e-5 (states of size ~4)


def test_climatology_of_f8():
    # Known F = 8 climatology: time-mean of x_i ~ 2.35, standard deviation ~ 3.64
    # (measured here over 16 x 20 time units: 2.347, 3.646; longer runs agree to 0.01).
    s = Lorenz96()
    x0 = s.attractor_states(16, _gen(2), dtype=torch.float64)
    traj = s.trajectory(x0, 400, _gen(3))
    assert torch.isfinite(traj).all()
    assert abs(float(traj.mean()) - 2.35) < 0.1
    assert abs(float(traj.std()) - 3.64) < 0.1


def test_deterministic_without_noise_leaves_generator_untouched(states):
    s = Lorenz96()
    g = _gen(4)
    before = g.get_state()
    a = s.step(states, 3, g)
    assert torch.equal(g.get_state(), before)
    assert torch.equal(a, s.step(states, 3, None))


def test_additive_noise_scheme_is_rk4_plus_euler_maruyama_increment(states):
    # one internal step per interval: x1 = RK4(x0) + q sqrt(dt) xi exactly
    s = Lorenz96(noise_std=0.7, interval=0.01)
    xi = s.draw_noise(8, generator=_gen(5), dtype=torch.float64)
    assert xi.shape == (8, 1, 40)
    expected = s.rk4_step(states) + 0.7 * math.sqrt(0.01) * xi[:, 0]
    torch.testing.assert_close(s.advance(states, xi), expected, rtol=0, atol=1e-14)
    assert torch.equal(s.step(states, 1, _gen(5)), s.advance(states, xi))


def test_noise_variance_per_interval(states):
    # over one interval the noise adds variance ~ q^2 * interval (small q: linear regime)
    q = 1e-3
    s = Lorenz96(noise_std=q)
    x = states[:1].expand(4000, 40)
    dev = s.step(x, 1, _gen(6)) - Lorenz96().step(states[:1], 1)
    var = float(dev.var(dim=0).mean())
    assert 0.6 * q**2 * 0.05 < var < 1.6 * q**2 * 0.05  # dynamics stretch/shrink it a little


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_chunking_and_seed_determinism_with_noise(states, chunk_size):
    s = Lorenz96(noise_std=0.5)
    whole = s.step(states, 2, _gen(7))
    assert torch.equal(s.step(states, 2, _gen(7), chunk_size=chunk_size), whole)
    assert not torch.allclose(s.step(states, 2, _gen(8)), whole)


def test_trajectory_layout(states):
    traj = Lorenz96(noise_std=0.1).trajectory(states[:3], 4, _gen(9))
    assert traj.shape == (5, 3, 40)
    assert torch.equal(traj[0], states[:3])
    assert torch.equal(traj[-1], Lorenz96(noise_std=0.1).step(states[:3], 4, _gen(9)))


def test_invalid_configuration_raises():
    with pytest.raises(ValueError, match="whole number"):
        Lorenz96(interval=0.055)
    with pytest.raises(ValueError, match="noise_std"):
        Lorenz96(noise_std=-1.0)
    with pytest.raises(ValueError, match="x"):
        Lorenz96().step(torch.zeros(2, 39), 1)
