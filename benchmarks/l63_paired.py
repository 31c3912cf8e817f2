"""Paired skill differences between filters of the Lorenz-63 ensemble-size sweep (same twins
per run, so the per-run differences cancel the twin-to-twin variability), mean ± s.e. over
runs and the number of runs in which the first filter is worse (docs/results/l63.md,
Figure 1).

Setups (a) and (b): FA-APF and FA-APF with gaussian weights against the EnKF and the BPF at
N = 128–512.  Setups (c) and (d): every row against FA-APF, and FA-APF against the Bayes
limit, at every N whose cells exist.

    genfilter experiment l63-ensemble-size --full          # the cells (hours; cached)
    python benchmarks/l63_paired.py outputs/l63-ensemble-size-full/cells
    python benchmarks/l63_paired.py outputs/l63-ensemble-size-full-d/cells --setups d
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import xarray as xr

PAIRS = (("fa-apf", "enkf"), ("fa-apf-gaussian-w", "enkf"), ("bpf", "enkf"), ("fa-apf", "bpf"))
PAIRS_CD = (
    ("flowdas", "fa-apf"),
    ("enkf", "fa-apf"),
    ("bpf", "fa-apf"),
    ("fa-apf", "bayes-limit"),
)
SIZES = (16, 32, 64, 128, 256, 512)


def _skills(path: Path):
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds["summary_skill"].values


def _cell(cells: Path, setup: str, key: str, n: int) -> Path:
    if key == "bayes-limit":
        return cells / f"l63-{setup}_bayes-limit_N100000.nc"
    return cells / f"l63-{setup}_{key}_N{n}.nc"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "cells", nargs="?", type=Path, default=Path("outputs/l63-ensemble-size-full/cells")
    )
    p.add_argument("--setups", default="ab", help="letters among a, b, c, d")
    args = p.parse_args()
    print("| setup | N | difference | mean ± s.e. | runs where the first is worse |")
    print("|---|---|---|---|---|")
    for setup in args.setups:
        pairs, sizes = (PAIRS, (128, 256, 512)) if setup in "ab" else (PAIRS_CD, SIZES)
        for n in sizes:
            for first, second in pairs:
                a, b = (_cell(args.cells, setup, k, n) for k in (first, second))
                if not (a.exists() and b.exists()):
                    continue
                d = _skills(a) - _skills(b)
                se = d.std(ddof=1) / math.sqrt(d.size)
                print(
                    f"| {setup} | {n} | {first} − {second} | {d.mean():.3f} ± {se:.3f} | "
                    f"{int((d > 0).sum())} of {d.size} |"
                )


if __name__ == "__main__":
    main()
