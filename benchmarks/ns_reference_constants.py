"""Stationary RMS vorticity of genfilter's NavierStokes2D under the settings that differ from
the reference data generator (docs/systems.md, "Reference constants").

The reference data (Chen et al. 2024, arXiv:2403.13724; also used by FlowDAS, Chen et al.
2025, arXiv:2501.16642) are normalised by 3.0679, the mean over snapshots of the per-snapshot
RMS ``||omega||_F / n`` (github.com/interpolants/forecasting, navier-stokes/utils.py,
``avg_pixel_norm``).  The generator (navier-stokes/NS_data_generation_code.ipynb in the same
repository) uses the same equation and discretisation as ours, but a 128² grid and
``dt = 1e-4``.  This script measures the stationary RMS with both statistics (square root of
the mean square, and the reference's mean of per-snapshot RMS) and the stationary enstrophy
balance ``alpha Z + nu P = eps^2 sum_m mean(phi_m^2) / 2`` (= 1 for the four modes, eps = 1),
for one configuration per call:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ns_reference_constants.py \\
        --resolution 32 --dt 1e-3 --trajectories 16 --spinup 50 --average 100

``--restart-dt`` spins up with ``--dt`` and then averages with ``--restart-dt`` (used for the
reference's ``dt = 1e-4``, too slow to spin up with on one core).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from genfilter.systems.navier_stokes import NavierStokes2D, forcing_modes


def _gradient_square(omega: torch.Tensor) -> torch.Tensor:
    """``mean |grad omega|^2`` per field (spectral, Parseval)."""
    n = omega.shape[-1]
    kx = torch.fft.fftfreq(n, 1.0 / n, dtype=omega.dtype).reshape(n, 1)
    ky = torch.fft.fftfreq(n, 1.0 / n, dtype=omega.dtype).reshape(1, n)
    hat = torch.fft.fft2(omega) / n**2
    return ((kx**2 + ky**2) * hat.abs().square()).sum(dim=(-2, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--dt", type=float, default=1e-3)
    parser.add_argument("--restart-dt", type=float, default=None)
    parser.add_argument("--nu", type=float, default=1e-3)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--spinup", type=float, default=50.0)
    parser.add_argument("--average", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    system = NavierStokes2D(
        resolution=args.resolution, nu=args.nu, epsilon=args.epsilon, dt=args.dt
    )
    g = torch.Generator().manual_seed(args.seed)
    omega = system.attractor_states(args.trajectories, g, burn_in=args.spinup)
    if args.restart_dt is not None:
        system = NavierStokes2D(
            resolution=args.resolution, nu=args.nu, epsilon=args.epsilon, dt=args.restart_dt
        )
    print(f"{system!r}; {args.trajectories} trajectories, spin-up {args.spinup} (dt {args.dt})")
    ms, rms, grad2 = [], [], []
    for _ in range(math.ceil(args.average / system.interval - 1e-9)):
        omega = system.step(omega, 1, g)
        square = omega.square().mean(dim=(-2, -1))
        ms.append(square)
        rms.append(square.sqrt())
        grad2.append(_gradient_square(omega))
    ms, rms, grad2 = torch.stack(ms), torch.stack(rms), torch.stack(grad2)  # (T, N)
    # standard errors from blocks of 10 time units, trajectories independent
    block = max(1, round(10.0 / system.interval))
    n_blocks = ms.shape[0] // block

    def block_se(series: torch.Tensor, transform=lambda v: v) -> float:
        means = transform(series[: n_blocks * block].reshape(n_blocks, block, -1).mean(1))
        return float(means.std() / math.sqrt(means.numel())) if means.numel() > 1 else math.nan

    rms_ms = math.sqrt(float(ms.mean()))
    phi2 = float(forcing_modes(args.resolution, torch.float64).square().mean(dim=(-2, -1)).sum())
    injection = 0.5 * args.epsilon**2 * phi2
    z, p = float(ms.mean()), float(grad2.mean())
    print(
        f"sqrt(mean omega^2)          {rms_ms:.4f} (s.e. {block_se(ms, torch.sqrt):.4f})\n"
        f"mean per-snapshot RMS       {float(rms.mean()):.4f} (s.e. {block_se(rms):.4f})"
        "   <- the statistic of the reference's 3.0679\n"
        f"enstrophy balance: alpha Z = {system.drag * z:.4f}, nu P = {system.nu * p:.4f}, "
        f"sum = {system.drag * z + system.nu * p:.4f} vs injection "
        f"eps^2 sum mean(phi^2) / 2 = {injection:.4f}\n"
        f"wall time {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
