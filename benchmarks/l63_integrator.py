"""The stochastic Lorenz-63 integrator: torchsde's Milstein against genfilter's written-out
copy of its arithmetic (``StochasticLorenz63.integrate``), one thread, in one process.

For each N and interval: seconds per interval of torchsde, of the written-out loop in torch
and of the same loop in numpy (what ``integrate`` runs on CPU with one thread or
N <= 4096; median over rounds that alternate the three, so the machine's drift cancels),
the ratios, and whether the three results are equal bit for bit.  The 10⁵-particle row is
what a Bayes-limit cell (a bootstrap PF with 10⁵ particles on the true model,
docs/results/l63.md) does at every observation step.

    python benchmarks/l63_integrator.py            # about 2 minutes on one core
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch

from genfilter.systems import lorenz63
from genfilter.systems.lorenz63 import StochasticLorenz63, milstein_torchsde


def _timed(fn, *args) -> tuple[float, torch.Tensor]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def _torch_loop(system: StochasticLorenz63, x: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    with mock.patch.object(lorenz63, "_numpy_path", lambda x, xi: False):
        return system.integrate(x, xi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 10_000, 100_000])
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| N | interval | torchsde (s) | torch loop (s) | numpy loop (s) "
        "| torchsde / numpy | torch loop / numpy | equal bits |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for interval in args.intervals:
        system = StochasticLorenz63(interval=interval)
        for n in args.sizes:
            g = torch.Generator().manual_seed(0)
            x = system.attractor_states(n, generator=g)
            xi = system.draw_noise(n, generator=g)
            times: dict[str, list[float]] = {"torchsde": [], "torch": [], "numpy": []}
            equal = True
            for _ in range(args.rounds):
                t_sde, a = _timed(milstein_torchsde, system, x, xi)
                t_loop, b = _timed(_torch_loop, system, x, xi)
                t_np, c = _timed(system.integrate, x, xi)
                equal &= torch.equal(a, b) and torch.equal(a, c)
                for key, t in zip(times, (t_sde, t_loop, t_np)):
                    times[key].append(t)
            med = {key: statistics.median(t) for key, t in times.items()}
            print(
                f"| {n} | {interval} | {med['torchsde']:.3f} | {med['torch']:.3f} | "
                f"{med['numpy']:.3f} | {med['torchsde'] / med['numpy']:.1f} | "
                f"{med['torch'] / med['numpy']:.1f} | {'yes' if equal else 'NO'} |"
            )


if __name__ == "__main__":
    main()
