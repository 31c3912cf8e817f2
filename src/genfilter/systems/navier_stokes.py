r"""2D Navier–Stokes (vorticity form) with stochastic forcing on four modes (the system of
Chen et al. 2024, used by Savary, Rozet & Louppe 2026, §4.2; docs/method.md#test-systems).

.. math::

    \mathrm{d}\omega + (v \cdot \nabla \omega)\,\mathrm{d}t
        = (\nu \Delta \omega - \alpha \omega)\,\mathrm{d}t + \varepsilon\,\mathrm{d}\eta, \qquad
    v = (\partial_y \psi, -\partial_x \psi), \quad -\Delta \psi = \omega,

    \mathrm{d}\eta = \mathrm{d}W_1 \sin 6x + \mathrm{d}W_2 \cos 7x + \mathrm{d}W_3 \sin 5(x + y)
        + \mathrm{d}W_4 \cos 8(x + y),

(Some descriptions write :math:`v = (-\partial_y\psi, \partial_x\psi)` together with
:math:`-\Delta\psi = \omega`; that pair gives a velocity whose curl is :math:`-\omega`.  We use the
consistent pair above, which is also what the reference generator does through
``jax_cfd.spectral.utils.vorticity_to_velocity``.
With the other sign, :math:`-\omega` solves the consistent equation driven by :math:`-\eta`
(which has the law of :math:`\eta`): only the sign of the field changes, not its RMS or spectrum.)
The equation holds on the torus :math:`[0, 2\pi)^2` with :math:`W_1, \dots, W_4` independent scalar Brownian
motions, :math:`\nu = 10^{-3}`, :math:`\alpha = 0.1`, :math:`\varepsilon = 1`, snapshots every
0.5 time units (the constants of Chen et al. 2024; docs/systems.md compares our statistics
with their data).

Discretisation (as the notebook that generated the reference data,
github.com/interpolants/forecasting): pseudo-spectral on
an ``n × n`` grid with ``torch.fft.rfft2``; the advection term is computed in physical
space from spectral derivatives and de-aliased by the 2/3 rule (every Fourier mode with
:math:`|k_x|` or :math:`|k_y| > (n-1)/3` is kept at zero); semi-implicit Euler–Maruyama in
time — explicit advection and noise, implicit (backward Euler) viscosity and drag:

.. math::

    \hat\omega^{s+1}_k = \frac{\hat\omega^s_k - \Delta t\, \widehat{(v\cdot\nabla\omega)}^s_k
        + \varepsilon \sum_{m=1}^4 \Delta W_m^s \hat\phi_{m,k}}{1 + \Delta t\,(\nu |k|^2 + \alpha)},
    \qquad \Delta W^s_m = \sqrt{\Delta t}\,\xi^s_m .

Grid and layout: states are ``(N, n, n)`` with ``omega[b, i, j]`` = :math:`\omega(x_i, y_j)`,
:math:`x_i = 2\pi i / n`, :math:`y_j = 2\pi j / n` ("ij" indexing: axis −2 is :math:`x`,
axis −1 is :math:`y`).

Time step: ``dt = 1e-3`` by default at 64² (measurements in docs/systems.md).  The advection
is forward Euler, stable only because viscosity and drag damp the highest retained modes, so
the limit depends on the velocity: on the stationary flow (max|v| ≈ 1.5–1.8) runs were stable
at ``dt = 6.25e-3`` and blew up at ``1e-2``; from an energetic random field (max|v| ≈ 3.8) stable
at ``1.25e-3``, blown up at ``2e-3``.  ``dt = 1e-3`` keeps a factor ≥ 6 on the attractor and
survives transients twice as fast as the stationary flow; over one snapshot interval its
pathwise error against ``dt = 1.25e-4`` on the same Brownian path is 0.2 % (relative L2,
strong order 1), against a 71 % transition spread, and the stationary RMS vorticity agrees with
``dt = 2.5e-4`` within sampling error.  Advective CFL number max|v| dt/dx ≈ 0.015.

``python -m genfilter.systems.navier_stokes --stats`` runs to statistical stationarity and
prints the RMS vorticity and the energy spectrum: 2.34 with the constants above at 64², where
the reference data are normalised by ≈ 3.07.  docs/systems.md ("Reference constants") compares
every constant and convention with the reference generator: none differs except the grid
(128²) and the time step (1e-4), which do not move the RMS; the enstrophy balance caps it at
:math:`\sqrt{10} \approx 3.16` for these constants at any resolution.

References:
    | Probabilistic Forecasting with Stochastic Interpolants and Föllmer Processes
    | (Chen et al., 2024), https://arxiv.org/abs/2403.13724
"""

from __future__ import annotations

__all__ = ["NavierStokes2D", "energy_spectrum", "forcing_modes", "rms_vorticity", "velocity"]

import math

import torch
from torch import Tensor

from .base import StochasticSystem, whole_steps


def _wavenumbers(n: int, dtype: torch.dtype, device=None) -> tuple[Tensor, Tensor]:
    """Integer wavenumbers of ``rfft2`` on ``[0, 2π)²``: ``kx`` ``(n, 1)``, ``ky`` ``(1, n//2+1)``."""
    kx = torch.fft.fftfreq(n, 1.0 / n, dtype=dtype, device=device).reshape(n, 1)
    ky = torch.fft.rfftfreq(n, 1.0 / n, dtype=dtype, device=device).reshape(1, n // 2 + 1)
    return kx, ky


def _grid(n: int, dtype: torch.dtype, device=None) -> tuple[Tensor, Tensor]:
    """Physical grid ``x, y`` ``(n, n)`` ("ij" indexing)."""
    r = torch.arange(n, dtype=dtype, device=device) * (2 * math.pi / n)
    return torch.meshgrid(r, r, indexing="ij")


def forcing_modes(n: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    r"""The four noise patterns :math:`\phi_m(x, y)`: :math:`\sin 6x`, :math:`\cos 7x`,
    :math:`\sin 5(x+y)`, :math:`\cos 8(x+y)` on the ``n × n`` grid; ``(4, n, n)``."""
    x, y = _grid(n, torch.float64, device)
    modes = torch.stack(
        (torch.sin(6 * x), torch.cos(7 * x), torch.sin(5 * (x + y)), torch.cos(8 * (x + y)))
    )
    return modes.to(dtype)


def _streamfunction_hat(omega_hat: Tensor, kx: Tensor, ky: Tensor) -> Tensor:
    k2 = kx**2 + ky**2
    inv = torch.where(
        k2 > 0, 1.0 / torch.where(k2 > 0, k2, torch.ones_like(k2)), torch.zeros_like(k2)
    )
    return omega_hat * inv


def velocity(omega: Tensor) -> Tensor:
    r"""Velocity :math:`v = (\partial_y \psi, -\partial_x \psi)`, :math:`-\Delta\psi = \omega`
    (zero-mean :math:`\psi`), spectrally — the divergence-free field whose curl
    :math:`\partial_x v_y - \partial_y v_x` is :math:`\omega`; ``(N, n, n) -> (N, 2, n, n)`` with
    ``[:, 0]`` = :math:`v_x`, ``[:, 1]`` = :math:`v_y`."""
    n = omega.shape[-1]
    kx, ky = _wavenumbers(n, omega.dtype, omega.device)
    psi_hat = _streamfunction_hat(torch.fft.rfft2(omega), kx, ky)
    u = torch.fft.irfft2(1j * ky * psi_hat, s=(n, n))
    v = torch.fft.irfft2(-1j * kx * psi_hat, s=(n, n))
    return torch.stack((u, v), dim=-3)


def rms_vorticity(omega: Tensor) -> Tensor:
    r"""Root-mean-square vorticity over the grid, :math:`\sqrt{\overline{\omega^2}}`; ``(N, n, n) -> (N,)``."""
    return omega.square().mean(dim=(-2, -1)).sqrt()


def energy_spectrum(omega: Tensor) -> tuple[Tensor, Tensor]:
    r"""Isotropic kinetic-energy spectrum, shell-summed.

    :math:`E(k) = \sum_{k - 1/2 \le |\mathbf{k}| < k + 1/2} \tfrac12 |\hat v_{\mathbf{k}}|^2
    = \sum \tfrac12 |\hat\omega_{\mathbf{k}}|^2 / |\mathbf{k}|^2` with :math:`\hat f` normalised
    so that :math:`\sum_k E(k) = \tfrac12 \overline{|v|^2}` (kinetic energy per unit area).

    Returns ``(k, E)``: integer shell wavenumbers ``(K,)`` and spectra ``(N, K)``,
    ``K = round(n / √2) + 1`` (shells up to the corner of the grid).
    """
    n = omega.shape[-1]
    kx, ky = _wavenumbers(n, omega.dtype, omega.device)
    omega_hat = torch.fft.rfft2(omega) / n**2
    k2 = kx**2 + ky**2
    density = 0.5 * omega_hat.abs().square() / torch.where(k2 > 0, k2, torch.ones_like(k2))
    density = torch.where(k2 > 0, density, torch.zeros_like(density))
    # rfft2 stores half the plane: count the columns 0 < ky < n/2 twice (their conjugates).
    weight = torch.full_like(ky, 2.0)
    weight[..., 0] = 1.0
    if n % 2 == 0:
        weight[..., -1] = 1.0
    density = density * weight
    shells = torch.round(k2.sqrt()).long().expand(n, n // 2 + 1).flatten()
    n_shells = int(shells.max()) + 1
    spectrum = density.new_zeros((*density.shape[:-2], n_shells))
    spectrum.index_add_(-1, shells, density.flatten(-2))
    return torch.arange(n_shells), spectrum


class NavierStokes2D(StochasticSystem):
    r"""2D Navier–Stokes vorticity with noise on four Fourier modes (module docstring;
    docs/method.md#test-systems); states ``(N, n, n)``.

    Arguments:
        resolution: grid size ``n`` (64, as in Savary et al. 2026, §4.2).
        nu: viscosity :math:`\nu` (1e-3).
        drag: linear drag :math:`\alpha` (0.1).
        epsilon: noise amplitude :math:`\varepsilon` (1).
        dt: internal step (1e-3; see the module docstring and docs/systems.md).
        interval: time between snapshots (0.5).

    Noise of one interval: standard normals ``(N, S, 4)`` (``S = interval / dt``),
    :math:`\Delta W^s_m = \sqrt{\Delta t}\,\xi^s_m`, drawn for the whole batch before
    integration (chunking never changes a result).
    """

    def __init__(
        self,
        resolution: int = 64,
        nu: float = 1e-3,
        drag: float = 0.1,
        epsilon: float = 1.0,
        dt: float = 1e-3,
        interval: float = 0.5,
    ):
        if int(resolution) != resolution or resolution < 24:
            raise ValueError(
                f"resolution must be an integer >= 24 (the forced modes reach |k| = 8), got {resolution}"
            )
        if dt <= 0 or interval <= 0:
            raise ValueError(f"dt and interval must be > 0, got dt={dt}, interval={interval}")
        if nu < 0 or drag < 0 or epsilon < 0:
            raise ValueError(f"nu, drag and epsilon must be >= 0, got {nu}, {drag}, {epsilon}")
        self.resolution = int(resolution)
        self.nu, self.drag, self.epsilon = float(nu), float(drag), float(epsilon)
        self.dt, self.interval = float(dt), float(interval)
        self.steps_per_interval = whole_steps(interval, dt)
        self.state_shape = (self.resolution, self.resolution)
        self._cache: dict = {}

    def __repr__(self) -> str:
        return (
            f"NavierStokes2D(resolution={self.resolution}, nu={self.nu}, drag={self.drag}, "
            f"epsilon={self.epsilon}, dt={self.dt}, interval={self.interval})"
        )

    # -- spectral operators -------------------------------------------------------------

    def _operators(self, dtype: torch.dtype, device) -> dict[str, Tensor]:
        key = (dtype, str(device))
        if key not in self._cache:
            n = self.resolution
            kx, ky = _wavenumbers(n, dtype, device)
            k2 = kx**2 + ky**2
            cutoff = (n - 1) // 3  # 2/3 rule: modes with |k_x| or |k_y| > cutoff are zero
            dealias = ((kx.abs() <= cutoff) & (ky.abs() <= cutoff)).to(dtype)
            inv_k2 = torch.where(
                k2 > 0, 1.0 / torch.where(k2 > 0, k2, torch.ones_like(k2)), torch.zeros_like(k2)
            )
            forcing_hat = (
                torch.fft.rfft2(forcing_modes(n, dtype, device)) * dealias
            )  # (4, n, n//2+1)
            self._cache[key] = {
                "kx": kx,
                "ky": ky,
                "dealias": dealias,
                "inv_k2": inv_k2,
                # backward Euler on the linear part: divide by 1 + dt (nu |k|^2 + alpha)
                "implicit": 1.0 / (1.0 + self.dt * (self.nu * k2 + self.drag)),
                "forcing_hat": forcing_hat,
            }
        return self._cache[key]

    def advection_hat(self, omega_hat: Tensor) -> Tensor:
        r"""De-aliased :math:`\widehat{v\cdot\nabla\omega}` from :math:`\hat\omega` ``(N, n, n//2+1)``."""
        n = self.resolution
        op = self._operators(omega_hat.real.dtype, omega_hat.device)
        kx, ky = op["kx"], op["ky"]
        psi_hat = omega_hat * op["inv_k2"]
        u = torch.fft.irfft2(1j * ky * psi_hat, s=(n, n))  # v_x =  d_y psi
        v = torch.fft.irfft2(-1j * kx * psi_hat, s=(n, n))  # v_y = -d_x psi
        omega_x = torch.fft.irfft2(1j * kx * omega_hat, s=(n, n))
        omega_y = torch.fft.irfft2(1j * ky * omega_hat, s=(n, n))
        return torch.fft.rfft2(u * omega_x + v * omega_y) * op["dealias"]

    def integrate(self, omega: Tensor, xi: Tensor | None) -> Tensor:
        r"""Semi-implicit Euler–Maruyama over ``S`` internal steps; ``omega`` ``(N, n, n)``,
        ``xi`` standard normals ``(N, S, 4)`` (``None``: no noise, ``S = steps_per_interval``).
        Deterministic given ``xi``; the state is kept de-aliased."""
        op = self._operators(omega.dtype, omega.device)
        steps = self.steps_per_interval if xi is None else xi.shape[1]
        noise_scale = self.epsilon * math.sqrt(self.dt)
        omega_hat = torch.fft.rfft2(omega) * op["dealias"]
        for s in range(steps):
            rhs = omega_hat - self.dt * self.advection_hat(omega_hat)
            if xi is not None and self.epsilon != 0.0:
                # sum_m dW_m phi_hat_m : (N, 4) x (4, n, n//2+1)
                rhs = rhs + torch.einsum(
                    "bm,mxy->bxy", (noise_scale * xi[:, s]).to(rhs.dtype), op["forcing_hat"]
                )
            omega_hat = rhs * op["implicit"]
        return torch.fft.irfft2(omega_hat, s=self.state_shape)

    # -- StochasticSystem ---------------------------------------------------------------

    def draw_noise(self, n, *, generator=None, dtype=torch.float32, device=None) -> Tensor | None:
        r"""Standard normals :math:`\xi` ``(n, S, 4)`` of one interval (``None`` if ``epsilon == 0``)."""
        if self.epsilon == 0.0:
            return None
        return torch.randn(
            (n, self.steps_per_interval, 4), generator=generator, dtype=dtype, device=device
        )

    def advance(self, x: Tensor, noise: Tensor | None) -> Tensor:
        if x.shape[0] == 1:
            # MKL's FFT takes another code path (other rounding) for a single transform than
            # for a batch; integrating a lone field as a pair keeps every chunking of a batch
            # bit-identical (tests/systems/test_navier_stokes.py checks it).
            pair = self.integrate(
                x.expand(2, *x.shape[1:]),
                None if noise is None else noise.expand(2, *noise.shape[1:]),
            )
            return pair[:1].clone()
        return self.integrate(x, noise)

    def random_field(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        peak_wavenumber: float = 3.0,
        rms: float = 2.0,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        r"""Smooth random vorticity fields ``(n, res, res)``: Gaussian Fourier coefficients with
        amplitude :math:`\propto |k| e^{-(|k|/k_0)^2}` (:math:`k_0` = ``peak_wavenumber``),
        zero mean, de-aliased, each rescaled to RMS ``rms``."""
        res = self.resolution
        op = self._operators(dtype, "cpu")
        k = (op["kx"] ** 2 + op["ky"] ** 2).sqrt()
        amplitude = k * torch.exp(-((k / peak_wavenumber) ** 2)) * op["dealias"]
        coeffs = torch.randn((n, 2, res, res // 2 + 1), generator=generator, dtype=dtype)
        field = torch.fft.irfft2(
            torch.complex(coeffs[:, 0], coeffs[:, 1]) * amplitude, s=(res, res)
        )
        return field * (rms / rms_vorticity(field)).reshape(n, 1, 1)

    def attractor_states(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        burn_in: float = 50.0,
        dtype: torch.dtype = torch.float32,
        chunk_size: int | None = None,
        progress: bool = False,
    ) -> Tensor:
        r"""``n`` independent states near statistical stationarity, ``(n, res, res)``: smooth
        random fields (:meth:`random_field`) run for ``burn_in`` time units (50 = 10
        e-folding times :math:`1/(2\alpha)` of the enstrophy; rounded up to whole intervals)."""
        x = self.random_field(n, generator, dtype=dtype)
        intervals = range(math.ceil(burn_in / self.interval - 1e-9))
        if progress:
            from tqdm.auto import tqdm

            intervals = tqdm(intervals, desc="NavierStokes2D burn-in", unit="interval")
        for _ in intervals:  # step by step: keeps only the current state in memory
            x = self.step(x, 1, generator, chunk_size=chunk_size)
        return x


def _stats(
    resolution: int, dt: float, nu: float, n: int, t_spinup: float, t_average: float, seed: int
) -> None:
    """Runs to stationarity and prints RMS vorticity and the energy spectrum (docs/systems.md)."""
    import time

    torch.set_num_threads(1)
    system = NavierStokes2D(resolution=resolution, dt=dt, nu=nu)
    g = torch.Generator().manual_seed(seed)
    print(f"{system!r}; {n} trajectories, spin-up {t_spinup}, average over {t_average} time units")
    start = time.perf_counter()
    omega = system.random_field(n, g, dtype=torch.float32)
    n_spin = math.ceil(t_spinup / system.interval)
    for k in range(n_spin):
        omega = system.step(omega, 1, g)
        if (k + 1) % max(1, n_spin // 10) == 0:
            rms = float(omega.square().mean().sqrt())
            print(
                f"  t = {(k + 1) * system.interval:6.1f}  rms vorticity {rms:.4f}  ({time.perf_counter() - start:.0f} s)"
            )
    square, spectrum, count, per_snapshot = 0.0, 0.0, 0, []
    for _ in range(math.ceil(t_average / system.interval)):
        omega = system.step(omega, 1, g)
        ms = float(omega.square().mean())
        per_snapshot.append(ms)
        square += ms
        spectrum = spectrum + energy_spectrum(omega)[1].mean(0)
        count += 1
    rms = math.sqrt(square / count)
    # standard error from block means (blocks of 10 time units, trajectories independent)
    block = max(1, round(10.0 / system.interval))
    blocks = torch.tensor(per_snapshot).split(block)
    means = torch.stack([b.mean() for b in blocks if len(b) == block]).sqrt()
    se = float(means.std() / math.sqrt(len(means))) if len(means) > 1 else float("nan")
    vmax = float(velocity(omega).square().sum(1).sqrt().max())
    print(f"stationary RMS vorticity {rms:.4f} (block s.e. {se:.4f}; reference data ≈ 3.068)")
    print(
        f"max |v| at the end {vmax:.3f}; advective CFL max|v| dt/dx = {vmax * dt / (2 * math.pi / resolution):.3f}"
    )
    spectrum = spectrum / count
    print("energy spectrum E(k) (shell-summed, time- and ensemble-averaged):")
    for k in range(1, min(len(spectrum), resolution // 3 + 2)):
        print(f"  k = {k:3d}  E = {float(spectrum[k]):.4e}")
    print(
        f"total kinetic energy {float(spectrum.sum()):.4f}; wall time {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":  # python -m genfilter.systems.navier_stokes --stats
    import argparse

    parser = argparse.ArgumentParser(description="2D Navier-Stokes (docs/systems.md) statistics")
    parser.add_argument(
        "--stats",
        action="store_true",
        help="run to stationarity and print RMS vorticity / spectrum",
    )
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--dt", type=float, default=1e-3)
    parser.add_argument("--nu", type=float, default=1e-3, help="viscosity (default: 1e-3)")
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--spinup", type=float, default=50.0, help="time units discarded")
    parser.add_argument("--average", type=float, default=100.0, help="time units averaged")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.stats:
        parser.error("nothing to do: pass --stats")
    _stats(
        args.resolution, args.dt, args.nu, args.trajectories, args.spinup, args.average, args.seed
    )
