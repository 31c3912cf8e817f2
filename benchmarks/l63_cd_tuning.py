"""The baselines' small tuning grid on setups (c) and (d) (observations every 0.5).

Every baseline row of ``genfilter experiment l63-* --setup cd`` runs at one setting per
setup, chosen here on *training* twins (seeds 10000, 10001; the experiments use seeds
0..9), with the shipped emulator of interval 0.5 and N = 64 members, 40 cycles (burn-in 10):

- EnKF and ETKF: multiplicative inflation;
- EnSF: the score of the prior (mixture / paired) and the ε_β of its schedule (1000 steps;
  100 are unstable at noise std 0.25, docs/results/l63.md);
- EnFF: the guidance scale (OT path, σ_min = 0.1).

The best setting of each (lowest mean analysis RMSE over the two twins; ties broken by the
grid order) is what ``genfilter.experiments.l63_results.TUNED`` holds.

    python benchmarks/l63_cd_tuning.py                 # both setups, ~30 min on one core
    python benchmarks/l63_cd_tuning.py --setup c --filters enkf,etkf
"""

from __future__ import annotations

import argparse
import json

import torch

from genfilter.experiments.config import parse_config
from genfilter.experiments.tuning import tune

GRIDS = {
    "enkf": {"inflation": [1.0, 1.05, 1.1, 1.2, 1.3]},
    "etkf": {"inflation": [1.0, 1.05, 1.1, 1.2, 1.3]},
    "ensf": {"score": ["mixture", "paired"], "eps_beta": [0.0003, 0.003], "steps": [1000]},
    "enff": {
        "path": ["ot"],
        "sigma_min": [0.1],
        "guidance_scale": [0.003, 0.01, 0.03, 0.1],
    },
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", default="cd", help="letters among c, d")
    p.add_argument("--filters", default=",".join(GRIDS))
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--json", default=None, help="also write the best settings here")
    args = p.parse_args()
    torch.set_num_threads(1)
    best: dict[str, dict] = {}
    for letter in args.setup:
        for method in args.filters.split(","):

            def make(params, seed, method=method, letter=letter):
                return parse_config(
                    {
                        "name": f"tune-l63-{letter}",
                        "setup": f"l63-{letter}",
                        "emulator": "shipped",
                        "filter": {
                            "method": method,
                            "particles": args.particles,
                            "options": dict(params),
                        },
                        "steps": args.steps,
                        "burn_in": 10,
                        "seed": seed,
                        "save": "moments",
                    }
                )

            result = tune(make, GRIDS[method], label=f"({letter}) {method}", progress=True)
            print(result.table(), flush=True)
            best.setdefault(letter, {})[method] = result.best_params
    print(json.dumps(best, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(best, f, indent=1)


if __name__ == "__main__":
    main()
