"""Where can FA-APF beat the EnKF on stochastic Lorenz-63?  The EnKF against the Bayes limit
(a bootstrap PF with many particles), both on the *true* model, for observation intervals
0.1, 0.25 and 0.5 and the two observation sets of the paper (x1 and x3; x1 only), noise std
0.25, N copies of the true initial state.  Where the EnKF sits at the limit no filter can beat
it; where it is far above, an optimal-proposal particle filter has room.

Every cell is one config of the named setups run by ``run_config`` into
``<out>/cells/*.nc``: ``l63-a`` / ``l63-b`` at interval 0.1, ``l63-c`` / ``l63-d`` at 0.5
(the configs of ``genfilter experiment l63-table1``'s Bayes-limit cells, at full scale), and
``l63-a`` / ``l63-b`` with the interval overridden at 0.25.  An interrupted sweep continues
(finished cells are reused after checking their stored config, an unfinished one resumes);
a finished cell with the same config in a ``--reuse`` folder (default
``outputs/l63-table1-full/cells`` and the cells kept in the repository,
``benchmarks/artifacts/l63-cells``) is used instead of running it again: this benchmark's own
cell of the same name, or an experiment's Bayes-limit cell.  Prints a
markdown table: skill (mean ± s.e. over runs) of the EnKF and of the limit, and their ratio.

    python benchmarks/l63_enkf_vs_bayes.py --quick     # 2 runs x 60 steps, limit N = 10^4
    python benchmarks/l63_enkf_vs_bayes.py             # 10 runs x 100 steps, limit N = 10^5

The full sweep is long: the 10^5-particle limit took 1.9 h (x1, x3) and 6.7 h (x1) per cell
at interval 0.1 on one core (docs/results/l63.md); at 0.5 each step integrates 5x longer.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from genfilter.experiments.config import parse_config
from genfilter.experiments.reporting import summarize_file
from genfilter.experiments.runner import run_config

INTERVALS = (0.1, 0.25, 0.5)
OBS = {"a": "x1, x3", "b": "x1"}


NAMED = {("a", 0.1): "l63-a", ("b", 0.1): "l63-b", ("a", 0.5): "l63-c", ("b", 0.5): "l63-d"}
"""(observation set, interval) -> the named setup with that interval."""


def cell(obs: str, interval: float, method: str, n: int, runs: int, steps: int, burn_in: int):
    named = NAMED.get((obs, interval))
    raw = {
        "name": named or f"l63-{obs}-dt{interval:g}",
        "setup": named or f"l63-{obs}",
        "emulator": "true",
        "filter": {"method": method, "particles": int(n)},
        "steps": steps,
        "burn_in": burn_in,
        "runs": runs,
        "seed": 0,
        "save": "moments",
    }
    if named is None:
        raw["system_options"] = {"interval": float(interval)}
    return parse_config(raw)


def stored_config(path: Path):
    import yaml

    from genfilter.io import open_run

    with open_run(path) as ds:
        return parse_config(yaml.safe_load(ds.attrs["config"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 runs x 60 steps, limit N = 10^4")
    ap.add_argument(
        "--out", type=Path, default=None, help="default outputs/l63-enkf-vs-bayes[-quick]"
    )
    ap.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        default=[Path("outputs/l63-table1-full/cells"), Path("benchmarks/artifacts/l63-cells")],
        help="folders of finished experiment cells whose Bayes-limit cells may be reused",
    )
    ap.add_argument("--intervals", type=float, nargs="+", default=list(INTERVALS))
    ap.add_argument("--obs", nargs="+", default=list(OBS), choices=list(OBS))
    ap.add_argument("--enkf-n", type=int, default=64)
    ap.add_argument("--limit-n", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs, steps, burn_in = (2, 60, 10) if args.quick else (10, 100, 10)
    limit_n = args.limit_n or (10_000 if args.quick else 100_000)
    out = args.out or Path("outputs/l63-enkf-vs-bayes" + ("-quick" if args.quick else ""))
    cells = out / "cells"
    rows = []
    for obs in args.obs:
        for dt in args.intervals:
            row = {"obs": OBS[obs], "interval": dt}
            for key, method, n in (("enkf", "enkf", args.enkf_n), ("limit", "bpf", limit_n)):
                cfg = cell(obs, dt, method, n, runs, steps, burn_in)
                path = cells / f"l63-{obs}_dt{dt:g}_{method}_N{n}.nc"
                # a finished cell with the same config: an experiment's Bayes-limit cell, or
                # this benchmark's own cell kept in the repository
                names = [path.name] + (
                    [f"{cfg.setup}_bayes-limit_N{n}.nc"] if key == "limit" else []
                )
                if not path.exists():
                    for other in (f / name for f in args.reuse for name in names):
                        if other.is_file() and stored_config(other) == cfg:
                            print(f"reusing {other}", flush=True)
                            path = other
                            break
                if path.exists() and stored_config(path) != cfg:
                    raise SystemExit(f"{path} holds another config; move it away or use --out")
                if not path.exists():
                    parts = path.with_name(path.name + ".parts")
                    print(f"running {path.name}", flush=True)
                    run_config(
                        cfg,
                        path,
                        resume=parts.exists(),
                        progress=True,
                        label=key,
                    )
                s = summarize_file(path)
                row[key], row[f"{key}_se"] = s["skill"], s["skill_se"]
            rows.append(row)
    print(
        f"\n{runs} runs x {steps} steps (burn-in {burn_in}), true model; EnKF N = "
        f"{args.enkf_n}, Bayes limit = bootstrap PF with N = {limit_n}\n"
    )
    print("| observed | interval | EnKF skill | Bayes limit | EnKF / limit |")
    print("|---|---|---|---|---|")
    for r in rows:
        se = "" if math.isnan(r["enkf_se"]) else f" ± {r['enkf_se']:.3f}"
        sl = "" if math.isnan(r["limit_se"]) else f" ± {r['limit_se']:.3f}"
        print(
            f"| {r['obs']} | {r['interval']:g} | {r['enkf']:.3f}{se} | {r['limit']:.3f}{sl} | "
            f"{r['enkf'] / r['limit']:.2f} |"
        )


if __name__ == "__main__":
    main()
