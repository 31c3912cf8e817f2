"""DPS guidance and MMPS with BiCGStab against the exact optimal proposal of the
linear-Gaussian model (docs/method.md#dps-guidance, docs/method.md#bicgstab,
docs/core.md "Which guidance and solver").

For the D = 4, M = 2 model of the tests (x1, x3 observed, noise sd 0.5), draws N samples of
p(x'|x, y) from one x with each guidance variant (xeab, 64 steps) and prints, per component, the
mean error in units of the exact posterior sd and the variance ratio sample / exact, the
Mahalanobis misfit of the sample mean to y, and the backward passes of the denoiser per call
(each call also makes one forward pass; tests/emulators/test_dps_bicgstab.py counts them).

    .venv/bin/python benchmarks/dps_bicgstab.py [--n 20000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_lg_model

from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.observations import Observation, Select, isotropic_noise

VARIANTS = [
    ("MMPS projected", {"covariance": "projected"}, "D = 4"),
    ("MMPS GMRES 1", {"covariance": "tweedie", "solver": "gmres", "iterations": 1}, "2"),
    ("MMPS CG 1", {"covariance": "tweedie", "solver": "cg", "iterations": 1}, "2"),
    ("MMPS BiCGStab 1", {"covariance": "tweedie", "solver": "bicgstab", "iterations": 1}, "3"),
    ("MMPS BiCGStab 2", {"covariance": "tweedie", "solver": "bicgstab"}, "5"),
    ("DPS likelihood", {"guidance": "dps", "dps_scale": "likelihood"}, "1"),
    ("DPS ζ' = 0.3", {"guidance": "dps", "dps_scale": 0.3}, "1"),
    ("DPS ζ' = 1 (default)", {"guidance": "dps"}, "1"),
    ("DPS ζ' = 3", {"guidance": "dps", "dps_scale": 3.0}, "1"),
    ("DPS ζ' = 10", {"guidance": "dps", "dps_scale": 10.0}, "1"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = make_lg_model()
    x0 = torch.randn(1, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0 = x0.expand(args.n, -1).clone()
    obs = Observation(
        torch.tensor([0.3, -0.5], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )
    ref = LinearGaussianEmulator(model.A, model.b, model.Q)
    mean, P = ref.exact_posterior(x0[:1], obs)
    sd = torch.diagonal(P).sqrt()

    def misfit(m):
        return float((m[[0, 2]] - obs.y).norm() / 0.5)

    prior = ref.transition_mean(x0[:1])[0]
    print(f"N = {args.n}; MC sd of a variance ratio ≈ {100 * (2 / args.n) ** 0.5:.1f} %")
    print(
        f"misfit to y of the prior mean {misfit(prior):.2f}, posterior mean {misfit(mean[0]):.2f}"
    )
    print(
        "| guidance | backward passes / call | mean error / sd (x1, x2, x3, x4) "
        "| variance ratio (x1, x2, x3, x4) | misfit to y |"
    )
    print("|---|---|---|---|---|")
    for name, options, passes in VARIANTS:
        em = LinearGaussianEmulator(model.A, model.b, model.Q, **options)
        xs = em.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
        err = (xs.mean(0) - mean[0]) / sd
        ratio = xs.var(0) / torch.diagonal(P)
        fmt = lambda v: ", ".join(f"{float(a):.3f}" for a in v)  # noqa: E731
        print(f"| {name} | {passes} | {fmt(err)} | {fmt(ratio)} | {misfit(xs.mean(0)):.2f} |")


if __name__ == "__main__":
    main()
