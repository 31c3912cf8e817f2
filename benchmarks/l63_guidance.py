"""The MMPS guidance hazard on the shipped Lorenz-63 emulator (a learned denoiser's Tweedie
covariance is least reliable at high noise; docs/method.md#projected-covariance), measured on
the proposal itself, and the transition covariance the "gaussian" weights need.

Part 1 — proposal: 30 attractor states x^k, an observation of a true next state (noise std
0.25), the exact optimal proposal by importance-weighting 50 000 true-model draws, 256 MMPS
samples per pair; mean error in exact-proposal sd and variance ratio per component, for
setups (a) x1, x3 and (b) x1, with the guidance variants:
  tweedie     raw Jacobian, GMRES 1 iteration (the paper's recipe)
  window      tweedie, guidance only where sigma_t <= 1
  symmetrised dense solve with (C + C^T)/2, no clipping (ablation)
  projected   dense solve with the symmetrised, eigenvalue-clipped C (the default)

Part 2 — one-step transition variance of 4 attractor states: true model (20 000 draws), the
Tweedie covariance at t = 1 (sigma_1 = 100), and the covariance deconvolved at sigma = 0.1
(DiffusionEmulator.predict_obs_moments with covariance "tweedie" / "projected").

    python benchmarks/l63_guidance.py        # about 4 minutes on one core
"""

from __future__ import annotations

import functools
import time

import torch

import genfilter.emulators.diffusion as diffusion
from genfilter.emulators.guidance import ProjectedMMPSDenoiser
from genfilter.experiments.l63 import load_shipped_emulator
from genfilter.experiments.proposal import format_study, l63_proposal_study
from genfilter.observations import Observation, Select, isotropic_noise
from genfilter.systems.lorenz63 import StochasticLorenz63

VARIANTS = {
    "tweedie": dict(covariance="tweedie"),
    "window": dict(covariance="tweedie", guidance_sigma_max=1.0),
    "symmetrised": dict(covariance="projected"),
    "projected": dict(covariance="projected"),
}


def part1() -> None:
    print("## Proposal against the exact optimal proposal (30 pairs)\n")
    for name, kw in VARIANTS.items():
        original = diffusion.ProjectedMMPSDenoiser
        if name == "symmetrised":
            diffusion.ProjectedMMPSDenoiser = functools.partial(ProjectedMMPSDenoiser, clip=False)
        try:
            cov = kw.pop("covariance")
            res = l63_proposal_study(
                ("a", "b"), (cov,), pairs=30, progress=False, emulator_options=kw
            )
        finally:
            diffusion.ProjectedMMPSDenoiser = original
        print(f"### {name}\n")
        print(format_study(res).replace(f"| {cov} |", f"| {name} |"))
        print()


def part2() -> None:
    print("## One-step transition variance: true model vs the emulator's Jacobian\n")
    system = StochasticLorenz63()
    g = torch.Generator().manual_seed(1)
    xs = system.attractor_states(4, generator=g).float()
    obs = Observation(torch.zeros(3), Select([0, 1, 2]), isotropic_noise(0.25))
    hvh = {}
    for cov in ("tweedie", "projected"):
        em = load_shipped_emulator(covariance=cov)
        hvh[cov] = em.predict_obs_moments(xs, obs, generator=torch.Generator().manual_seed(2))[2]
    print("| state | true var (x1, x2, x3) | Tweedie at t = 1 | deconvolved at σ = 0.1 |")
    print("|---|---|---|---|")
    for i, x in enumerate(xs):
        true = system.step(x.expand(20_000, 3).clone(), 1, g).var(0)
        f = lambda v: ", ".join(f"{float(a):.3g}" for a in v)  # noqa: E731
        print(
            f"| {i} | {f(true)} | {f(hvh['tweedie'][i].diagonal())} | "
            f"{f(hvh['projected'][i].diagonal())} |"
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    t0 = time.time()
    part1()
    part2()
    print(f"\n({time.time() - t0:.0f} s)")
