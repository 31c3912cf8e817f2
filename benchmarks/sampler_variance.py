"""One-step variance error of each azula sampler on the exact linear-Gaussian denoiser
(the sampler and its step count set the spread as much as the filter does;
docs/method.md#sampling, docs/core.md "Which sampler: measured, not assumed").

For the D = 4, M = 2 model of the tests, draws N samples of the transition p(x'|x) and of
the optimal proposal p(x'|x, y) from one x, and prints the sample variance divided by the
closed-form variance (mean over components) for every sampler and step count, with the
number of denoiser calls per sample.

    .venv/bin/python benchmarks/sampler_variance.py [--n 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_lg_model

from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.observations import Observation, Select, isotropic_noise

CONFIGS = [
    ("ddim", 16, {"eta": 1.0}, 1),
    ("ddim", 64, {"eta": 1.0}, 1),
    ("ddim", 256, {"eta": 1.0}, 1),
    ("ddim", 64, {"eta": 0.0}, 1),
    ("euler", 64, {}, 1),
    ("heun", 16, {}, 2),
    ("heun", 32, {}, 2),
    ("xeab", 16, {"order": 2}, 1),
    ("xeab", 32, {"order": 2}, 1),
    ("xeab", 64, {"order": 2}, 1),
    ("xeab", 64, {"order": 3}, 1),
    ("pc", 32, {"corrections": 1, "delta": 0.1}, 2),
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
    print(f"N = {args.n}; MC sd of a variance ratio ≈ {100 * (2 / args.n) ** 0.5:.1f} %")
    print(
        "| sampler | steps | options | calls/sample | prior var ratio | posterior var ratio | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, steps, opts, calls in CONFIGS:
        eta = opts.pop("eta", 1.0)
        em = LinearGaussianEmulator(
            model.A,
            model.b,
            model.Q,
            sampler=name,
            steps=steps,
            eta=eta,
            sampler_kwargs=opts,
            iterations=4,
        )
        if name in ("ddim",):
            opts = {"eta": eta}
        t0 = time.perf_counter()
        xs = em.sample(x0, generator=torch.Generator().manual_seed(1))
        xp = em.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
        _, P = em.exact_posterior(x0[:1], obs)
        prior = (torch.diagonal(torch.cov(xs.T)) / torch.diagonal(model.Q)).mean().item()
        post = (torch.diagonal(torch.cov(xp.T)) / torch.diagonal(P)).mean().item()
        print(
            f"| {name} | {steps} | {opts or ''} | {calls * steps} | {prior:.3f} | {post:.3f} | "
            f"{time.perf_counter() - t0:.1f} |"
        )


if __name__ == "__main__":
    main()
