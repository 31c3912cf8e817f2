r"""Stochastic Lorenz-63 with multiplicative noise (Savary, Rozet & Louppe 2026, §4.1, Eq. 29;
docs/method.md#test-systems).

.. math::

    \mathrm{d}x_j = f_j(x)\,\mathrm{d}t + \varepsilon\, x_j\, \mathrm{d}W_t, \qquad
    f(x) = \begin{pmatrix} \sigma (x_2 - x_1) \\ x_1 (\rho - x_3) - x_2 \\ x_1 x_2 - \beta x_3 \end{pmatrix},

Itô, with **one** scalar Brownian motion :math:`W` shared by the three components (the
multiplicative noise of Chekroun et al. 2011).  Defaults :math:`\sigma = 10`, :math:`\rho = 28`,
:math:`\beta = 8/3`, :math:`\varepsilon = 0.3`, internal step :math:`\Delta t = 10^{-3}`,
snapshots every :math:`0.1` time units (genfilter's defaults; docs/systems.md).

Integrator: Milstein (strong order 1; the noise is commutative, a single :math:`W`), which
for :math:`g(x) = \varepsilon x` reads

.. math:: x \leftarrow x + f(x)\Delta t + \varepsilon x \Delta W + \tfrac12 \varepsilon^2 x (\Delta W^2 - \Delta t),

the step of ``torchsde.sdeint(..., method="milstein")`` (Li, Wong, Chen & Duvenaud 2020).
:meth:`StochasticLorenz63.integrate` writes torchsde's arithmetic out, operation for
operation (:func:`milstein_torchsde` is the torchsde call itself; the tests check that the
two agree bit for bit in float32 and float64), because torchsde computes the correction
term by automatic differentiation at every internal step; on CPU the loop runs in numpy
(:func:`_milstein_numpy`, the same bits), 12–17× faster than torchsde at N = 64 and
3.6–4.3× at 10⁵ particles (``python benchmarks/l63_integrator.py``); the 10⁵-particle
Bayes limits of docs/results/l63.md spend nearly all their time here.  :func:`milstein_step` is the
textbook step in plain torch, the tests' independent reference.

References:
    | Deterministic Nonperiodic Flow (Lorenz, 1963)
    | Journal of the Atmospheric Sciences 20, 130-141

    | Stochastic Climate Dynamics: Random Attractors and Time-Dependent Invariant Measures
    | (Chekroun, Simonnet & Ghil, 2011), Physica D 240, 1685-1700

    | Numerical Solution of Stochastic Differential Equations (Kloeden & Platen, 1992)
    | Springer

    | Scalable Gradients for Stochastic Differential Equations (Li, Wong, Chen & Duvenaud,
    | 2020), AISTATS, arXiv:2001.01328 (torchsde)
"""

from __future__ import annotations

__all__ = [
    "StochasticLorenz63",
    "DeterministicLorenz63",
    "euler_maruyama_step",
    "lorenz63_drift",
    "milstein_step",
    "milstein_torchsde",
]

import math

import numpy as np
import torch
import torchsde
from torch import Tensor

from .base import StochasticSystem, whole_steps


def lorenz63_drift(
    x: Tensor, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> Tensor:
    r"""Lorenz-63 vector field :math:`f(x)`; ``(N, 3) -> (N, 3)``."""
    return torch.stack(_drift_components(*x.unbind(-1), sigma, rho, beta), dim=-1)


def _drift_components(
    x1: Tensor, x2: Tensor, x3: Tensor, sigma: float, rho: float, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The three components of :func:`lorenz63_drift` from the three components of the state
    (any equal shapes)."""
    return sigma * (x2 - x1), x1 * (rho - x3) - x2, x1 * x2 - beta * x3


def milstein_step(
    x: Tensor,
    dW: Tensor,
    dt: float,
    *,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    epsilon: float = 0.3,
) -> Tensor:
    r"""One Milstein step :math:`x + f\Delta t + \varepsilon x \Delta W + \frac12 \varepsilon^2 x
    (\Delta W^2 - \Delta t)` in plain torch (Kloeden & Platen 1992; docs/method.md#test-systems).

    ``x`` ``(N, 3)``; ``dW`` the Brownian increments over the step, ``(N,)`` or ``(N, 1)``
    (variance ``dt``).  Reference implementation for the tests of the torchsde path.
    """
    dW = dW.reshape(-1, 1)
    drift = lorenz63_drift(x, sigma, rho, beta)
    return x + drift * dt + epsilon * x * dW + 0.5 * epsilon**2 * x * (dW * dW - dt)


def euler_maruyama_step(
    x: Tensor,
    dW: Tensor,
    dt: float,
    *,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    epsilon: float = 0.3,
) -> Tensor:
    r"""One Euler–Maruyama step :math:`x + f\Delta t + \varepsilon x \Delta W` (strong order
    1/2 for multiplicative noise; the contrast to :func:`milstein_step` in the tests)."""
    dW = dW.reshape(-1, 1)
    return x + lorenz63_drift(x, sigma, rho, beta) * dt + epsilon * x * dW


class _StepBrownian(torchsde.BaseBrownian):
    r"""A Brownian motion known on the integer grid :math:`\tau = 0, 1, \dots, S`.

    ``xi`` ``(N, S)`` holds the increments :math:`W_{\tau+1} - W_\tau \sim \mathcal{N}(0, 1)`
    of a *standard* Brownian motion in step units :math:`\tau = t / \Delta t`.  torchsde asks
    for :math:`W_{t_b} - W_{t_a}` with integer :math:`t_a < t_b` only (fixed step 1 from 0).
    """

    __slots__ = ("xi",)

    def __init__(self, xi: Tensor):
        self.xi = xi

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_U or return_A:
            raise ValueError("_StepBrownian only returns increments W(tb) - W(ta)")
        i0, i1 = round(float(ta)), round(float(tb))
        if float(ta) != i0 or float(tb) != i1 or not 0 <= i0 < i1 <= self.xi.shape[1]:
            raise ValueError(
                f"_StepBrownian is defined on the integer steps 0..{self.xi.shape[1]}, got ({ta}, {tb})"
            )
        if i1 == i0 + 1:
            return self.xi[:, i0 : i0 + 1]
        return self.xi[:, i0:i1].sum(dim=1, keepdim=True)

    def __repr__(self) -> str:
        return f"_StepBrownian(batch={self.xi.shape[0]}, steps={self.xi.shape[1]})"

    @property
    def dtype(self):
        return self.xi.dtype

    @property
    def device(self):
        return self.xi.device

    @property
    def shape(self):
        return torch.Size((self.xi.shape[0], 1))

    @property
    def levy_area_approximation(self):
        return "none"


class _StepTimeSDE:
    r"""The SDE in step units :math:`\tau = t / \Delta t` for torchsde:
    :math:`\mathrm{d}X = f(X)\Delta t\,\mathrm{d}\tau + \varepsilon\sqrt{\Delta t}\, X\,
    \mathrm{d}B_\tau`, :math:`B_\tau = W_t / \sqrt{\Delta t}` a standard Brownian motion.

    Why step units: torchsde advances a fixed-step clock by repeated addition
    (``t += dt``); with ``dt = 1`` the clock stays on exact integers, so every internal step
    is exactly one increment of the pre-drawn noise and the output times are hit exactly
    (in physical units ``0.1 / 1e-3`` additions drift off the grid and torchsde would then
    take a sliver step and interpolate).  The Milstein step in :math:`\tau` with
    :math:`\Delta\tau = 1` is algebraically the Milstein step in :math:`t` (module docstring).
    """

    noise_type = "scalar"
    sde_type = "ito"

    def __init__(self, system: StochasticLorenz63):
        self.system = system
        self.dt = system.dt
        self.noise_scale = system.noise_scale

    def f(self, t, y: Tensor) -> Tensor:
        return self.system.drift(y) * self.dt

    def g(self, t, y: Tensor) -> Tensor:  # (N, 3, 1): scalar noise
        return (self.noise_scale * y).unsqueeze(-1)


def milstein_torchsde(system: StochasticLorenz63, x: Tensor, xi: Tensor) -> Tensor:
    r""":meth:`StochasticLorenz63.integrate` by ``torchsde.sdeint(method="milstein")`` in step
    units (:class:`_StepTimeSDE`, :class:`_StepBrownian`): the reference the written-out
    integrator reproduces bit for bit (tests, ``benchmarks/l63_integrator.py``)."""
    steps = xi.shape[1]
    ts = torch.tensor([0.0, float(steps)], dtype=x.dtype, device=x.device)
    with torch.no_grad():  # torchsde would otherwise keep a graph through every step
        ys = torchsde.sdeint(
            _StepTimeSDE(system), x, ts, bm=_StepBrownian(xi), method="milstein", dt=1.0
        )
    return ys[-1]


class StochasticLorenz63(StochasticSystem):
    r"""Stochastic Lorenz-63 with multiplicative noise (docs/method.md#test-systems); states
    ``(N, 3)``.

    Arguments:
        sigma, rho, beta: Lorenz parameters (10, 28, 8/3).
        epsilon: noise amplitude :math:`\varepsilon` (0.3, genfilter's default).
        dt: internal Milstein step (1e-3, genfilter's default).
        interval: time between snapshots (0.1); must be a whole number of ``dt``.

    Noise of one interval: ``S = interval / dt`` standard normals per particle, ``(N, S)``,
    :math:`\Delta W = \sqrt{\Delta t}\,\xi`.  They are drawn for the whole batch before any
    integration (see :class:`~genfilter.emulators.simulator.StochasticSystem`), so particle
    ``i`` sees the same Brownian path whatever the chunking.

    torchsde's derivative-using Milstein for scalar noise computes the correction term as
    :math:`\nabla_x(\tfrac12 |g|^2)\,(\Delta W^2 - \Delta t)/2` (a vector–Jacobian product),
    which equals the textbook :math:`(g\cdot\nabla) g` only when :math:`\partial g/\partial x`
    is symmetric — true here (:math:`\partial g/\partial x = \varepsilon I`); the tests check
    that it reproduces :func:`milstein_step` to rounding error.
    """

    state_shape = (3,)

    def __init__(
        self,
        sigma: float = 10.0,
        rho: float = 28.0,
        beta: float = 8.0 / 3.0,
        epsilon: float = 0.3,
        dt: float = 1e-3,
        interval: float = 0.1,
    ):
        if dt <= 0 or interval <= 0:
            raise ValueError(f"dt and interval must be > 0, got dt={dt}, interval={interval}")
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.sigma, self.rho, self.beta = float(sigma), float(rho), float(beta)
        self.epsilon, self.dt, self.interval = float(epsilon), float(dt), float(interval)
        self.steps_per_interval = whole_steps(interval, dt)

    def __repr__(self) -> str:
        return (
            f"StochasticLorenz63(sigma={self.sigma}, rho={self.rho}, beta={self.beta:.6g}, "
            f"epsilon={self.epsilon}, dt={self.dt}, interval={self.interval})"
        )

    def drift(self, x: Tensor) -> Tensor:
        r"""The drift :math:`f(x)`; ``(N, 3) -> (N, 3)``."""
        return lorenz63_drift(x, self.sigma, self.rho, self.beta)

    def diffusion(self, x: Tensor) -> Tensor:
        r"""The diffusion :math:`g(x) = \varepsilon x` (coefficient of the scalar ``dW``); ``(N, 3)``."""
        return self.epsilon * x

    def draw_noise(self, n, *, generator=None, dtype=torch.float32, device=None) -> Tensor:
        r"""Standard normals :math:`\xi` ``(n, S)``; :math:`\Delta W = \sqrt{\Delta t}\,\xi`."""
        return torch.randn(
            (n, self.steps_per_interval), generator=generator, dtype=dtype, device=device
        )

    def integrate(self, x: Tensor, xi: Tensor) -> Tensor:
        r"""Milstein integration of ``x`` ``(N, 3)`` over ``xi.shape[1]`` internal steps driven by
        the standard normals ``xi`` ``(N, S)`` (:math:`\Delta W_s = \sqrt{\Delta t}\,\xi_s`);
        deterministic given ``xi``, and bit for bit :func:`milstein_torchsde` (module
        docstring).

        torchsde's step in step units :math:`\tau = t/\Delta t` (:class:`_StepTimeSDE`),
        with :math:`c = \varepsilon\sqrt{\Delta t}` and :math:`I = \xi_s`, is
        :math:`((x + f(x)\Delta t) + (c x) I) + ((c x)\,\tfrac12 (I^2 - 1))\,c` — the last
        product is autograd's vector–Jacobian product of :math:`g = c x` with cotangent
        :math:`g \cdot \tfrac12 (I^2 - 1)` — evaluated here in the same order, on the
        components as contiguous rows.  Elementwise operations round the same whatever the
        layout, so only the order matters."""
        if x.ndim != 2 or x.shape[-1] != 3 or xi.ndim != 2 or xi.shape[0] != x.shape[0]:
            raise ValueError(
                f"x must be (N, 3) and xi (N, S), got {tuple(x.shape)} and {tuple(xi.shape)}"
            )
        c = self.noise_scale
        dt, sigma, rho, beta = self.dt, self.sigma, self.rho, self.beta
        with torch.no_grad():
            noise = xi.T.contiguous()  # (S, N): row s is step s
            half_v = 0.5 * (noise**2 - torch.ones((), dtype=xi.dtype, device=xi.device))
            if _numpy_path(x, xi):
                params = (c, dt, sigma, rho, beta)
                rows = x.detach().numpy().T  # a view; _milstein_numpy makes the one copy
                out = _milstein_numpy(rows, noise.numpy(), half_v.numpy(), *params)
                return torch.from_numpy(out.T.copy())
            a, b, z = x.T.contiguous().unbind(0)
            for i, h in zip(noise, half_v):
                fa, fb, fz = _drift_components(a, b, z, sigma, rho, beta)
                ga, gb, gz = c * a, c * b, c * z
                a = a + fa * dt + ga * i + (ga * h) * c
                b = b + fb * dt + gb * i + (gb * h) * c
                z = z + fz * dt + gz * i + (gz * h) * c
            return torch.stack((a, b, z), dim=-1)

    @property
    def noise_scale(self) -> float:
        r""":math:`\varepsilon\sqrt{\Delta t}`, the diffusion coefficient in step units."""
        return self.epsilon * math.sqrt(self.dt)

    def advance(self, x: Tensor, noise: Tensor) -> Tensor:
        return self.integrate(x, noise)

    def attractor_states(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        burn_in: float = 10.0,
        dtype: torch.dtype = torch.float32,
        chunk_size: int | None = None,
    ) -> Tensor:
        r"""``n`` independent states on the (stochastic) attractor, ``(n, 3)``.

        Starts from :math:`\mathcal{N}((0, 0, 25), 8^2 I)` and runs ``burn_in`` time units
        (rounded up to whole snapshot intervals; 10 ≈ 10 Lyapunov times by default).
        """
        x0 = torch.randn((n, 3), generator=generator, dtype=dtype) * 8.0
        x0[:, 2] += 25.0
        return self.step(
            x0, math.ceil(burn_in / self.interval - 1e-9), generator, chunk_size=chunk_size
        )


_NUMPY_MAX_ROWS = 4096
"""Largest batch :meth:`StochasticLorenz63.integrate` runs through numpy when torch has
more than one thread (above it torch's threads win; with one thread numpy always does)."""


def _numpy_path(x: Tensor, xi: Tensor) -> bool:
    """Whether :meth:`StochasticLorenz63.integrate` takes :func:`_milstein_numpy`: CPU
    float32 or float64 tensors of one dtype, small batches or one torch thread."""
    return (
        x.device.type == "cpu"
        and xi.device.type == "cpu"
        and x.dtype == xi.dtype
        and x.dtype in (torch.float32, torch.float64)
        and (x.shape[0] <= _NUMPY_MAX_ROWS or torch.get_num_threads() == 1)
    )


def _milstein_numpy(
    x: np.ndarray,
    noise: np.ndarray,
    half_v: np.ndarray,
    c: float,
    dt: float,
    sigma: float,
    rho: float,
    beta: float,
) -> np.ndarray:
    r"""The loop of :meth:`StochasticLorenz63.integrate` in numpy, in place on preallocated
    arrays: ``x`` ``(3, N)`` (components as rows, any layout; copied once, never written),
    ``noise`` and ``half_v`` ``(S, N)``; returns the final ``(3, N)``.

    Every operation is the torch loop's, in the same order and the same precision (the
    parameters rounded to the arrays' dtype as torch rounds a Python scalar), and
    IEEE-754 rounds an elementwise sum or product the same in both libraries, so the
    results agree bit for bit (tested); numpy's per-operation overhead is a fraction of
    torch's, which dominates at the batch sizes of a filter (``python
    benchmarks/l63_integrator.py``)."""
    st = np.array(x, copy=True, order="C")
    a, b, z = st
    cast = st.dtype.type
    c, dt, sigma, rho, beta = (cast(v) for v in (c, dt, sigma, rho, beta))
    f, g, u = np.empty_like(st), np.empty_like(st), np.empty_like(st)
    fa, fb, fz = f
    # a member thrown far off the attractor may overflow: it becomes inf / NaN, as in torch
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for i, h in zip(noise, half_v):
            np.subtract(b, a, out=fa)
            fa *= sigma  # sigma (x2 - x1)
            np.subtract(rho, z, out=fb)
            fb *= a
            fb -= b  # x1 (rho - x3) - x2
            np.multiply(a, b, out=fz)
            np.multiply(beta, z, out=u[0])
            fz -= u[0]  # x1 x2 - beta x3
            np.multiply(c, st, out=g)  # g = c x
            # x <- ((x + f dt) + g I) + ((g h) c), the torch loop's order
            f *= dt
            st += f
            np.multiply(g, i, out=u)
            st += u
            g *= h
            g *= c
            st += g
    return st


class DeterministicLorenz63:
    r"""Deterministic Lorenz-63 transition (``StochasticLorenz63`` with ε = 0) in numpy.

    With ε = 0 the system's Milstein step reduces to Euler,
    :math:`x \leftarrow x + f(x)\,\Delta t`, repeated ``interval / dt`` times; this loop
    computes it with the same floating-point operations as
    :func:`~genfilter.systems.lorenz63.lorenz63_drift` (bit-identical results, tested) but
    without torchsde's per-step overhead.  ``generator`` is accepted and unused.
    """

    def __init__(self, system: StochasticLorenz63) -> None:
        if float(system.epsilon) != 0.0:
            raise ValueError(f"DeterministicLorenz63 needs epsilon == 0, got {system.epsilon}")
        self.system = system
        self.state_shape = (3,)

    def __repr__(self) -> str:
        return f"DeterministicLorenz63({self.system!r})"

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""One snapshot interval of every member, ``(N, 3) -> (N, 3)``."""
        if x_prev.ndim != 2 or x_prev.shape[1] != 3:
            raise ValueError(f"x_prev must have shape (N, 3), got {tuple(x_prev.shape)}")
        s = self.system
        sigma, rho, beta, dt = s.sigma, s.rho, s.beta, s.dt
        x = x_prev.detach().cpu().double().numpy()
        a, b, c = x[:, 0].copy(), x[:, 1].copy(), x[:, 2].copy()
        # a member thrown far off the attractor by a bad analysis may overflow: it then
        # becomes inf / NaN, which assimilate() reports as an error (no numpy warnings)
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(s.steps_per_interval):
                da = sigma * (b - a)
                db = a * (rho - c) - b
                dc = a * b - beta * c
                a, b, c = a + dt * da, b + dt * db, c + dt * dc
        out = torch.from_numpy(np.stack([a, b, c], axis=1))
        return out.to(dtype=x_prev.dtype, device=x_prev.device)

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return self.sample(x_prev)
