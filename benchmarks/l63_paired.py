"""Paired skill differences between filters of the Lorenz-63 ensemble-size sweep (same twins
per run, so the per-run differences cancel the twin-to-twin variability), mean ± s.e. over
runs and the number of runs in which the first filter is worse (docs/results/l63.md,
Figure 1).

Setups (a) and (b): FA-APF, and FA-APF in the paper's configuration (with dirac and with
gaussian weights), against the EnKF and the BPF at N = 128–512.  Setups (c) and (d): every row minus FA-APF, the Bayes limit included, at every
N whose cells exist (the experiment's own ``paired_differences``, which its results.md
prints when the sweep ends).

    genfilter experiment l63-ensemble-size --full          # the cells (hours; cached)
    python benchmarks/l63_paired.py outputs/l63-ensemble-size-full/cells
    python benchmarks/l63_paired.py outputs/l63-ensemble-size-full-d/cells --setups d
    python benchmarks/l63_paired.py outputs/l63-ensemble-size-full/cells --setups a \
        --reference "FA-APF (interpolant)"     # every finished row minus this one

``--reference``: every finished cell of the setups (any row of the experiments, the Bayes
limit included) minus the reference row at the same N.

``--grid``: the sweep's table of each setup, one line per row and one column per N:
skill mean ± s.e. over the runs and, in brackets, the paired difference to FA-APF and the
runs in which the row is worse; empty where the cell has not run (the tables of
docs/results/l63.md, "Skill against N on (c) and (d)" and Figure 1's FA-APF against the EnKF
on (a) and (b)).

    python benchmarks/l63_paired.py outputs/l63-ensemble-size-full-d/cells --setups d --grid

``--ancestors N``: for FA-APF and the oracle (``FA-APF (exact)``) at N, run by run: the
skill, the mean number of distinct ancestors per step (the run files' ``unique_ancestors``,
every step), the steps whose copies all come from one ancestor, and the run's worst step
(its error, ESS and ancestors): where a particle filter with few particles breaks down.

    python benchmarks/l63_paired.py outputs/l63-ensemble-size-full-c/cells --setups c --ancestors 16
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import xarray as xr

from genfilter.experiments.l63_results import BAYES, ROWS, SCALES, paired_differences
from genfilter.experiments.l63_results import finished_cells as all_finished_cells

PAIRS = (
    ("fa-apf", "enkf"),
    ("fa-apf", "bpf"),
    ("fa-apf-paper", "enkf"),
    ("fa-apf-paper-gaussian-w", "enkf"),
    ("bpf", "enkf"),
    ("fa-apf-paper", "bpf"),
)
ROWS_CD = (
    "FA-APF",
    "FA-APF (moments_sigma 0.1)",
    "FA-APF (dirac w.)",
    "FA-APF (paper)",
    "FA-APF (exact)",
    "FlowDAS",
    "EnKF",
    "ETKF",
    "EnSF",
    "EnFF",
    "BPF",
)


def _skills(path: Path):
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds["summary_skill"].values


def finished_cells(cells: Path, setup: str) -> list[tuple[str, str, int, Path]]:
    """``(setup, label, N, path)`` of the finished sweep cells of ``setup`` of :data:`ROWS_CD` and
    the Bayes limit, row by row."""
    order = (*ROWS_CD, BAYES)
    mine = [c for c in all_finished_cells(cells) if c[0] == setup and c[1] in order]
    return sorted(mine, key=lambda c: order.index(c[1]))  # stable: N ascending within a row


def grid(cells: Path, setup: str, reference: str = "FA-APF") -> str:
    """Markdown table of a setup's sweep: rows of :data:`ROWS_CD` that have a finished cell
    (in that order), columns N = 16 … 512; the reference row in bold."""
    mine = finished_cells(cells, setup)
    found = {(label, n): path for _, label, n, path in mine}
    paired = {(d["filter"], d["N"]): d for d in paired_differences(mine, reference=reference)}
    sizes = SCALES["full"].sizes
    lines = [
        "| filter | " + " | ".join(f"N = {n}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for label in ROWS_CD:
        if not any((label, n) in found for n in sizes):
            continue
        entries = []
        for n in sizes:
            if (label, n) not in found:
                entries.append("")
                continue
            v = _skills(found[label, n])
            text = f"{v.mean():.3f} ± {v.std(ddof=1) / math.sqrt(v.size):.3f}"
            if label == reference:
                text = f"**{text}**"
            elif (label, n) in paired:
                d = paired[label, n]
                text += (
                    f" ({d['difference']:+.3f} ± {d['difference_se']:.3f}, "
                    f"{d['worse']} of {d['runs']})"
                )
            entries.append(text)
        lines.append(f"| {label} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def ancestors(cells: Path, setup: str, n: int, rows=("FA-APF", "FA-APF (exact)")) -> str:
    """Markdown table, run by run, of the collapse diagnostics of ``rows`` at ``N = n``."""
    found = {label: path for _, label, size, path in finished_cells(cells, setup) if size == n}
    lines = [
        "| filter | run | skill | mean ancestors per step | steps with one ancestor "
        "| worst step: error, ESS, ancestors |",
        "|---|---|---|---|---|---|",
    ]
    for label in rows:
        if label not in found:
            continue
        with xr.open_dataset(found[label], engine="h5netcdf") as ds:
            skill, step_error = ds["summary_skill"].values, ds["skill"].values
            ess, anc = ds["ess"].values, ds["unique_ancestors"].values
        for r in range(skill.size):
            k = int(step_error[r].argmax())
            lines.append(
                f"| {label} | {r} | {skill[r]:.3f} | {anc[r].mean():.1f} | "
                f"{int((anc[r] == 1).sum())} | step {k}: {step_error[r, k]:.2f}, "
                f"{ess[r, k]:.1f}, {int(anc[r, k])} |"
            )
        lines.append(
            f"| {label} | all | {skill.mean():.3f} | {anc.mean():.1f} | {int((anc == 1).sum())} | |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "cells", nargs="?", type=Path, default=Path("outputs/l63-ensemble-size-full/cells")
    )
    p.add_argument("--setups", default="ab", help="letters among a, b, c, d")
    p.add_argument("--reference", default=None, help=f"a row among {list(ROWS)}")
    p.add_argument("--grid", action="store_true", help="the rows × N table of each setup's sweep")
    p.add_argument(
        "--ancestors",
        type=int,
        default=None,
        metavar="N",
        help="FA-APF's and the oracle's collapse diagnostics at N, run by run",
    )
    args = p.parse_args()
    if args.ancestors is not None:
        for setup in args.setups:
            print(f"Setup ({setup}), N = {args.ancestors}\n")
            print(ancestors(args.cells, setup, args.ancestors) + "\n")
        return
    if args.grid:
        for setup in args.setups:
            print(f"Setup ({setup})\n\n{grid(args.cells, setup, args.reference or 'FA-APF')}\n")
        return
    if args.reference is not None:
        if args.reference not in ROWS:
            raise SystemExit(f"--reference must be one of {list(ROWS)}, got {args.reference!r}")
        cells = [c for c in all_finished_cells(args.cells) if c[0] in args.setups]
        print("| setup | N | row − reference | mean ± s.e. | runs where the row is worse |")
        print("|---|---|---|---|---|")
        for d in paired_differences(cells, reference=args.reference):
            print(
                f"| {d['setup']} | {d['N']} | {d['filter']} − {args.reference} | "
                f"{d['difference']:.3f} ± {d['difference_se']:.3f} | {d['worse']} of {d['runs']} |"
            )
        return
    print("| setup | N | difference | mean ± s.e. | runs where the first is worse |")
    print("|---|---|---|---|---|")
    for setup in args.setups:
        if setup in "cd":
            for d in paired_differences(finished_cells(args.cells, setup)):
                print(
                    f"| {setup} | {d['N']} | {d['filter']} − FA-APF | {d['difference']:.3f} ± "
                    f"{d['difference_se']:.3f} | {d['worse']} of {d['runs']} |"
                )
            continue
        for n in (128, 256, 512):
            for first, second in PAIRS:
                a, b = (args.cells / f"l63-{setup}_{k}_N{n}.nc" for k in (first, second))
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
