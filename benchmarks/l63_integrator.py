"""The stochastic Lorenz-63 integrator: torchsde's Milstein against genfilter's written-out
copy of its arithmetic (``StochasticLorenz63.integrate``), one thread, in one process.

For each N and interval: seconds per interval of both (median over rounds that alternate
the two, so the machine's drift cancels), their ratio, and whether the results are equal
bit for bit.  The 10⁵-particle row is what a Bayes-limit cell (a bootstrap PF with 10⁵
particles on the true model, docs/results/l63.md) does at every observation step.

    python benchmarks/l63_integrator.py            # about 2 minutes on one core
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from genfilter.systems.lorenz63 import StochasticLorenz63, milstein_torchsde


def _timed(fn, *args) -> tuple[float, torch.Tensor]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 10_000, 100_000])
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| N | interval | torchsde (s) | written out (s) | torchsde / written out | equal bits |")
    print("|---|---|---|---|---|---|")
    for interval in args.intervals:
        system = StochasticLorenz63(interval=interval)
        for n in args.sizes:
            g = torch.Generator().manual_seed(0)
            x = system.attractor_states(n, generator=g)
            xi = system.draw_noise(n, generator=g)
            ours, theirs, ratios, equal = [], [], [], True
            for _ in range(args.rounds):
                t_theirs, a = _timed(milstein_torchsde, system, x, xi)
                t_ours, b = _timed(system.integrate, x, xi)
                equal &= torch.equal(a, b)
                ours.append(t_ours)
                theirs.append(t_theirs)
                ratios.append(t_theirs / t_ours)
            print(
                f"| {n} | {interval} | {statistics.median(theirs):.3f} | "
                f"{statistics.median(ours):.3f} | {statistics.median(ratios):.2f} | "
                f"{'yes' if equal else 'NO'} |"
            )


if __name__ == "__main__":
    main()
