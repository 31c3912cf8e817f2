"""Properties of genfilter.systems.lorenz63 (stochastic Lorenz-63, Savary, Rozet & Louppe
2026, §4.1; docs/method.md#test-systems)."""

import math

import numpy as np
import pytest
import torch

from genfilter.systems.lorenz63 import (
    StochasticLorenz63,
    euler_maruyama_step,
    lorenz63_drift,
    milstein_step,
    milstein_torchsde,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def system():
    return StochasticLorenz63()


@pytest.fixture(scope="module")
def attractor64(system):
    """64 attractor states in float64 (short burn-in: enough to leave the initial blob)."""
    return system.attractor_states(64, _gen(0), burn_in=2.0, dtype=torch.float64)


def test_constants_default_to_spec(system):
    assert (system.sigma, system.rho, system.beta) == (10.0, 28.0, 8.0 / 3.0)
    assert (system.epsilon, system.dt, system.interval) == (0.3, 1e-3, 0.1)
    assert system.steps_per_interval == 100
    assert system.state_shape == (3,)


def test_drift_is_lorenz63():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    expected = torch.tensor([[10.0 * (2 - 1), 1 * (28 - 3) - 2, 1 * 2 - 8 / 3 * 3]])
    torch.testing.assert_close(lorenz63_drift(x), expected)


def test_interval_must_be_whole_number_of_steps():
    with pytest.raises(ValueError, match="whole number"):
        StochasticLorenz63(dt=3e-3, interval=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("interval", [0.1, 0.5])
def test_integrate_is_torchsde_milstein_bit_for_bit(attractor64, dtype, interval):
    # The written-out integrator repeats torchsde's arithmetic (step-unit clock, autograd's
    # Milstein correction) operation for operation: equal bits, not just close values, so
    # twins and Bayes limits computed through torchsde reproduce exactly.
    system = StochasticLorenz63(interval=interval)
    x = attractor64.to(dtype)
    xi = system.draw_noise(64, generator=_gen(11), dtype=dtype)
    assert torch.equal(system.integrate(x, xi), milstein_torchsde(system, x, xi))
    # another memory layout of the same states (column-major) changes nothing either
    columns = x.T.contiguous().T
    assert not columns.is_contiguous()
    assert torch.equal(system.integrate(columns, xi), milstein_torchsde(system, x, xi))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_integrate_numpy_and_torch_paths_agree_bit_for_bit(monkeypatch, dtype):
    # integrate() runs small CPU batches through numpy (less overhead per operation) and the
    # rest through torch: the same operations in the same order, so the same bits, also
    # where a member blows up (inf / NaN) and for an input that requires grad.
    from genfilter.systems import lorenz63

    system = StochasticLorenz63(interval=0.5)
    x = system.attractor_states(40, generator=_gen(3)).to(dtype)
    x[0] = torch.tensor([1e30, -1e30, 1e30], dtype=dtype)  # overflows within the interval
    xi = system.draw_noise(40, generator=_gen(4), dtype=dtype)
    assert lorenz63._numpy_path(x, xi)
    fast = system.integrate(x.clone().requires_grad_(), xi)
    monkeypatch.setattr(lorenz63, "_numpy_path", lambda x, xi: False)
    slow = system.integrate(x, xi)
    assert not torch.isfinite(slow[0]).all() and torch.isfinite(slow[1:]).all()
    assert fast.dtype == dtype and not fast.requires_grad
    torch.testing.assert_close(fast, slow, rtol=0, atol=0, equal_nan=True)  # NaN where NaN


def test_integrate_rejects_bad_shapes(system):
    with pytest.raises(ValueError, match=r"x must be \(N, 3\) and xi \(N, S\)"):
        system.integrate(torch.zeros(4, 2), torch.zeros(4, 100))
    with pytest.raises(ValueError, match=r"x must be \(N, 3\) and xi \(N, S\)"):
        system.integrate(torch.zeros(4, 3), torch.zeros(5, 100))


def test_torchsde_milstein_equals_plain_milstein(system, attractor64):
    # Same increments -> same result (float64 rounding only): the production path (torchsde's
    # Milstein step written out: step-unit clock, the correction as autograd computes it) is
    # exactly the Milstein step of the module docstring.
    xi = system.draw_noise(64, generator=_gen(1), dtype=torch.float64)
    out = system.integrate(attractor64, xi)
    ref = attractor64.clone()
    for k in range(xi.shape[1]):
        ref = milstein_step(ref, math.sqrt(system.dt) * xi[:, k], system.dt)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-11)


def _strong_errors(x0, epsilon, T, refinements, n_ref, seed, methods=("milstein",)):
    """E|X_T^h - X_T^ref| for h = T/m, m in refinements, per method; the reference (plain
    Milstein with step T/n_ref) and every coarse solution are driven by the SAME Brownian path."""
    n = x0.shape[0]
    dW = torch.randn((n, n_ref), generator=_gen(seed), dtype=x0.dtype) * math.sqrt(T / n_ref)
    ref = x0.clone()
    for k in range(n_ref):
        ref = milstein_step(ref, dW[:, k], T / n_ref, epsilon=epsilon)
    hs = np.array([T / m for m in refinements])
    errors = {}
    for method in methods:
        errors[method] = []
        for m in refinements:
            h = T / m
            coarse = dW.reshape(n, m, n_ref // m).sum(-1)  # the same path on the coarse grid
            if method == "milstein":  # the production path: torchsde
                system = StochasticLorenz63(epsilon=epsilon, dt=h, interval=T)
                out = system.integrate(x0, coarse / math.sqrt(h))
            else:
                out = x0.clone()
                for k in range(m):
                    out = euler_maruyama_step(out, coarse[:, k], h, epsilon=epsilon)
            errors[method].append(float((out - ref).norm(dim=-1).mean()))
        errors[method] = np.array(errors[method])
    return hs, errors


def test_milstein_strong_order_one(system):
    # Default constants, T = 0.25, 400 paths, h = T/16 ... T/256; measured slope 1.09.
    x0 = system.attractor_states(400, _gen(2), burn_in=2.0, dtype=torch.float64)
    hs, errors = _strong_errors(x0, 0.3, 0.25, [16, 32, 64, 128, 256], 2048, seed=3)
    slope = np.polyfit(np.log(hs), np.log(errors["milstein"]), 1)[0]
    assert 0.8 <= slope <= 1.3, (slope, errors)


def test_euler_maruyama_is_only_order_half_where_noise_dominates(system):
    # Contrast: at the default epsilon = 0.3 the O(h) drift error hides the difference (both
    # schemes show slope ~1 for h >= 1e-3).  With epsilon = 1 the noise error dominates at
    # small h: Euler-Maruyama drops towards order 1/2 while Milstein keeps order 1
    # (measured local slopes on the two finest steps: EM 0.58, Milstein 1.11).
    x0 = system.attractor_states(400, _gen(4), burn_in=2.0, dtype=torch.float64)
    hs, errors = _strong_errors(
        x0, 1.0, 0.25, [128, 256, 512], 4096, seed=5, methods=("milstein", "euler")
    )
    local = {k: math.log(e[-2] / e[-1]) / math.log(hs[-2] / hs[-1]) for k, e in errors.items()}
    assert local["euler"] < 0.8, (local, errors)
    assert local["milstein"] > 0.9, (local, errors)
    assert errors["milstein"][-1] < 0.5 * errors["euler"][-1]


def test_same_seed_same_result_and_different_seed_different(system, attractor64):
    x = attractor64.float()
    a = system.step(x, 2, _gen(7))
    b = system.step(x, 2, _gen(7))
    c = system.step(x, 2, _gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_chunking_does_not_change_results(system, attractor64, chunk_size):
    x = attractor64[:11].float()
    whole = system.step(x, 1, _gen(9))
    assert torch.equal(system.step(x, 1, _gen(9), chunk_size=chunk_size), whole)


def test_trajectory_is_repeated_step(system, attractor64):
    x = attractor64[:5].float()
    traj = system.trajectory(x, 3, _gen(10), chunk_size=2)
    assert traj.shape == (4, 5, 3)
    assert torch.equal(traj[0], x)
    assert torch.equal(traj[-1], system.step(x, 3, _gen(10)))


def test_zero_intervals_is_identity(system, attractor64):
    assert torch.equal(system.step(attractor64, 0, _gen(0)), attractor64)


def test_noise_free_limit_is_deterministic():
    det = StochasticLorenz63(epsilon=0.0)
    x = torch.tensor([[1.0, 1.0, 20.0]], dtype=torch.float64)
    torch.testing.assert_close(det.step(x, 1, _gen(0)), det.step(x, 1, _gen(1)))


def test_attractor_statistics(system):
    # 256 trajectories x 5 time units: bounded, z-mean near the stochastic attractor's ~24.7
    # (deterministic L63: 23.5; standard error here ~0.2), x and y symmetric about 0.
    x0 = system.attractor_states(256, _gen(11), burn_in=2.0)
    traj = system.trajectory(x0, 50, _gen(12))
    assert torch.isfinite(traj).all()
    assert traj.abs().max() < 100.0
    mean = traj.mean(dim=(0, 1))
    assert 23.0 < float(mean[2]) < 26.0, mean
    assert abs(float(mean[0])) < 1.5 and abs(float(mean[1])) < 1.5, mean


def test_bad_states_raise_naming_the_argument(system):
    with pytest.raises(ValueError, match="x0"):
        system.trajectory(torch.zeros(4, 2), 1)
    with pytest.raises(ValueError, match="x"):
        system.step(torch.full((2, 3), float("nan")), 1)
