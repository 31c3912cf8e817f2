"""Paired skill differences between filters of the Lorenz-63 ensemble-size sweep (same twins
per run, so the per-run differences cancel the twin-to-twin variability): FA-APF and FA-APF
with gaussian weights against the EnKF and the BPF, per setup and N, mean ± s.e. over runs
and the number of runs in which the first filter is worse (docs/results/l63.md, Figure 1).

    genfilter experiment l63-ensemble-size --full          # the cells (hours; cached)
    python benchmarks/l63_paired.py outputs/l63-ensemble-size-full/cells
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import xarray as xr

PAIRS = (("fa-apf", "enkf"), ("fa-apf-gaussian-w", "enkf"), ("bpf", "enkf"), ("fa-apf", "bpf"))


def _skills(path: Path):
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds["summary_skill"].values


def main(cells: Path) -> None:
    print("| setup | N | difference | mean ± s.e. | runs where the first is worse |")
    print("|---|---|---|---|---|")
    for setup in ("a", "b"):
        for n in (128, 256, 512):
            for first, second in PAIRS:
                p, q = (cells / f"l63-{setup}_{k}_N{n}.nc" for k in (first, second))
                if not (p.exists() and q.exists()):
                    continue
                d = _skills(p) - _skills(q)
                se = d.std(ddof=1) / math.sqrt(d.size)
                print(
                    f"| {setup} | {n} | {first} − {second} | {d.mean():.3f} ± {se:.3f} | "
                    f"{int((d > 0).sum())} of {d.size} |"
                )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/l63-ensemble-size-full/cells"))
