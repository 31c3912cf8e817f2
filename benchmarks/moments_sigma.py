"""Calibrates ``moments_sigma`` of the shipped Lorenz-63 diffusion emulators
(``DiffusionEmulator.calibrate_moments_sigma``): for each noise level of the ladder, the
mean absolute log-ratio of the transition variances that the gaussian weights use
(deconvolved at that level, at the fixed-point mean of FA-APF's configuration) to the
variances of 256 of the emulator's own draws, over 30 attractor states (and the median and
maximum of the ratio's |log|); and, for
reference only (it does not enter the choice), the same ratio to 4000 true-model draws.
The chosen levels are ``genfilter.experiments.l63_results.MOMENTS_SIGMA``
(docs/results/l63.md#genfilters-fa-apf-on-lorenz-63).

    python benchmarks/moments_sigma.py        # about 3 minutes on one core
"""

from __future__ import annotations

import torch

from genfilter.emulators.diffusion import MOMENTS_SIGMA_LADDER
from genfilter.experiments.l63 import load_shipped_emulator
from genfilter.experiments.l63_results import FIXED_POINT_MEAN, MOMENTS_SIGMA
from genfilter.systems.lorenz63 import StochasticLorenz63


def main() -> None:
    torch.set_num_threads(1)
    print(
        "| emulator interval | moments_sigma | error vs its own draws | median, max "
        "| error vs the true model |"
    )
    print("|---|---|---|---|---|")
    for interval in sorted(MOMENTS_SIGMA):
        system = StochasticLorenz63(interval=interval)
        g = torch.Generator().manual_seed(7)
        states = system.attractor_states(30, generator=g).float()
        em = load_shipped_emulator(interval, **FIXED_POINT_MEAN)
        cal = em.calibrate_moments_sigma(states, draws=256, generator=g)
        true_var = torch.stack(
            [system.step(x.expand(4000, 3).clone(), 1, g).var(0) for x in states]
        ).double()
        for s in MOMENTS_SIGMA_LADDER:
            v = cal.variances[s].clamp(min=1e-300)
            vs_true = float((v / true_var).log().abs().mean())
            own = (v / cal.draw_variances).log().abs()
            mark = "**" if s == cal.best else ""
            print(
                f"| {interval} | {mark}{s}{mark} | {mark}{cal.errors[s]:.3f}{mark} | "
                f"{float(own.median()):.2f}, {float(own.max()):.2f} | {vs_true:.3f} |"
            )
        if cal.best != MOMENTS_SIGMA[interval]:
            print(
                f"(MOMENTS_SIGMA[{interval}] = {MOMENTS_SIGMA[interval]}, chosen now: {cal.best})"
            )


if __name__ == "__main__":
    main()
