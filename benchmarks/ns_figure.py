"""The Navier–Stokes figure of docs/results/ns.md: for each observation level of a Table-2
run folder (``benchmarks/ns_gpu.py cell --out``), the true vorticity, the observation, and
FA-APF's ensemble mean and spread, at the last cycle of the first twin.

The observation is drawn on the grid: a coarsened field as its block averages, a subsampled
field as its observed points (grey elsewhere).

    python benchmarks/ns_figure.py outputs/ns32-cell --out docs/results/ns/fields_ns32.png
    python benchmarks/ns_figure.py benchmarks/artifacts/ns32_cpu/deep --tag mean_sigma0.5 \
        --out docs/results/ns/fields_ns32_deep.png
    python benchmarks/ns_figure.py outputs/ns32-cell --table cell.json cell_local.json
    python benchmarks/ns_figure.py outputs/ns32-fp16 --table cell.json "cell_mean.json=fixed-point mean"

``--pool [FOLDER ...]`` prints the same table from the run files of the folder and of further
folders, pooling their twins (``python benchmarks/ns_figure.py benchmarks/artifacts/ns32_cpu/deep
--pool benchmarks/artifacts/ns32_cpu/deep-t2``); with ``--paired A B`` it prints instead
the per-twin values of methods A and B (e.g. ``fa-apf-mean_sigma0.5 flowdas``) and their
paired differences; with ``--versus FOLDER ...`` each method and level against the same
method in those folders, paired by twin seed (the same table run with another emulator:
``python benchmarks/ns_figure.py benchmarks/artifacts/ns32_cpu/tuned2 --pool
benchmarks/artifacts/ns32_cpu/tuned2-t1 --versus benchmarks/artifacts/ns32_cpu/deep``).

``--table`` prints instead the skill of every filter at every observation level (rows:
filters; columns: levels), from the ``cell*.json`` files of the folder; ``NAME=label``
appends `` (label)`` to the filters of that file (e.g. a second FA-APF row).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from genfilter.experiments.reporting import twin_values

RUN = re.compile(r"ns(\d+)-(coarsen|subsample)(\d+)-(.+)-N\d+\.nc$")
"""A run file of ``ns_gpu.py cell``: grid size, operator, level, method and its tag."""


def observation_image(obs: np.ndarray, kind: str, level: int, size: int) -> np.ndarray:
    """The observation vector as a ``size × size`` image (NaN where nothing is observed)."""
    m = size // level
    grid = obs.reshape(m, m)
    if kind == "coarsen":
        return np.kron(grid, np.ones((level, level)))
    image = np.full((size, size), np.nan)
    image[::level, ::level] = grid
    return image


def table(folder: Path, names: list[str], metric: str = "skill") -> str:
    """Markdown table of ``metric`` ± its standard error: filters × observation levels."""
    rows: dict[str, dict[str, str]] = {}
    levels: list[str] = []
    for spec in names:
        name, _, suffix = spec.partition("=")
        for r in json.loads((folder / name).read_text())["rows"]:
            if metric not in r:
                continue
            if suffix:
                r = {**r, "method": f"{r['method']} ({suffix})"}
            obs = r["observation"]
            levels += [obs] if obs not in levels else []
            se = r.get(f"{metric}_se", math.nan)
            rows.setdefault(r["method"], {})[obs] = f"{r[metric]:.3f} ± {se:.3f}"
    return markdown(rows, levels)


def level_order(obs: str) -> tuple[int, int]:
    """Sort key of an observation level such as ``"coarsen 4"``: coarsening first, then by
    level."""
    kind, level = obs.split()
    return {"coarsen": 0, "subsample": 1}[kind], int(level)


def markdown(rows: dict[str, dict[str, str]], levels: list[str]) -> str:
    """Filters × observation levels (sorted by :func:`level_order`)."""
    levels = sorted(levels, key=level_order)
    lines = ["| filter | " + " | ".join(levels) + " |", "|---" * (len(levels) + 1) + "|"]
    for method, cells in rows.items():
        lines.append(f"| {method} | " + " | ".join(cells.get(o, "—") for o in levels) + " |")
    return "\n".join(lines)


def pooled_values(folders: list[Path], metric: str = "skill") -> dict[str, dict[str, list]]:
    """``summary_<metric>`` of every twin, by method and observation level, from the run
    files of several folders (``runs/*.nc`` of each, e.g. a first table and a further twin
    run with ``ns_gpu.py cell --seed``), in the order of the folders and of the runs: the
    lists of two methods are paired twin by twin when every folder ran both
    (:func:`seeded_values` without the seeds)."""
    return {
        method: {obs: list(twins.values()) for obs, twins in cells.items()}
        for method, cells in seeded_values(folders, metric).items()
    }


def _run_files(folders: list[Path]):
    """(method, observation level, path) of every run file under ``<folder>/runs``."""
    for folder in folders:
        found = [(RUN.search(p.name), p) for p in sorted((folder / "runs").glob("*.nc"))]
        if not any(m for m, _ in found):
            raise SystemExit(
                f"error: {folder} has no run files "
                "(runs/ns<resolution>-<kind><level>-<method>-N<particles>.nc)"
            )
        for m, path in found:
            if m:
                yield m.group(4), f"{m.group(2)} {m.group(3)}", path


def seeded_values(folders: list[Path], metric: str = "skill") -> dict[str, dict[str, dict]]:
    """``summary_<metric>`` by method, observation level and twin seed, in the order of the
    folders and of the runs (:func:`genfilter.experiments.reporting.twin_values`; a twin
    found twice is refused)."""
    paths: dict[str, dict[str, list[Path]]] = {}
    for method, obs, path in _run_files(folders):
        paths.setdefault(method, {}).setdefault(obs, []).append(path)
    try:
        return {
            method: {obs: twin_values(files, metric) for obs, files in cells.items()}
            for method, cells in paths.items()
        }
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def versus_table(folders: list[Path], others: list[Path], metric: str = "skill") -> str:
    """Per method and level, the twins that both sets of folders ran (matched by twin seed):
    the mean in each set and the paired difference (this set − the other), e.g. the same
    filters with another emulator."""
    mine, theirs = seeded_values(folders, metric), seeded_values(others, metric)
    lines = [
        "| method | level | twins | these folders | the others | difference | lower |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in sorted(set(mine) & set(theirs)):
        for o in sorted(set(mine[method]) & set(theirs[method]), key=level_order):
            seeds = sorted(set(mine[method][o]) & set(theirs[method][o]))
            if not seeds:
                continue
            a = np.array([mine[method][o][t] for t in seeds])
            b = np.array([theirs[method][o][t] for t in seeds])
            mean, se = _mean_se(a - b)
            lines.append(
                f"| {method} | {o} | {', '.join(map(str, seeds))} | {a.mean():.3f} | "
                f"{b.mean():.3f} | {mean:+.3f} ± {se:.3f} | {int((a < b).sum())} of {a.size} |"
            )
    return "\n".join(lines)


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan)


def pooled_table(folders: list[Path], metric: str = "skill") -> str:
    """Markdown table of ``metric`` pooled over the twins of :func:`pooled_values`: the
    mean of the runs ± its standard error (sd over all twins, ddof 1, / √n), and the number
    of twins per cell."""
    rows: dict[str, dict[str, str]] = {}
    levels: list[str] = []
    for method, cells in pooled_values(folders, metric).items():
        for o, runs in cells.items():
            levels += [o] if o not in levels else []
            mean, se = _mean_se(np.array(runs))
            rows.setdefault(method, {})[o] = f"{mean:.3f} ± {se:.3f} ({len(runs)})"
    return markdown(rows, levels)


def paired_table(folders: list[Path], a: str, b: str, metric: str = "skill") -> str:
    """Per level, the twins' ``metric`` of methods ``a`` and ``b`` and their paired
    difference ``a − b`` (mean ± standard error over the twins, and in how many twins
    ``a`` is lower); last line, the same over every twin-level."""
    values = pooled_values(folders, metric)
    for name in (a, b):
        if name not in values:
            raise SystemExit(f"--paired: no run files of method {name!r} (have {sorted(values)})")
    levels = sorted(set(values[a]) & set(values[b]), key=level_order)
    lines = [f"| level | {a} | {b} | {a} − {b} | {a} lower |", "|---|---|---|---|---|"]
    every = []
    for o in levels:
        va, vb = np.array(values[a][o]), np.array(values[b][o])
        if va.size != vb.size:
            raise SystemExit(f"--paired: {o}: {va.size} twins of {a}, {vb.size} of {b}")
        d = va - vb
        every.append(d)
        mean, se = _mean_se(d)
        lines.append(
            f"| {o} | {', '.join(f'{v:.3f}' for v in va)} | {', '.join(f'{v:.3f}' for v in vb)} "
            f"| {mean:+.3f} ± {se:.3f} | {int((d < 0).sum())} of {d.size} |"
        )
    d = np.concatenate(every)
    mean, se = _mean_se(d)
    lines.append(f"| every level | | | {mean:+.3f} ± {se:.3f} | {int((d < 0).sum())} of {d.size} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--run", type=int, default=0)
    p.add_argument("--table", nargs="+", help="cell*.json files of the folder")
    p.add_argument(
        "--pool",
        nargs="*",
        type=Path,
        help="table pooled over the twins of the run files of the folder and of these "
        "further folders (n twins per cell in brackets)",
    )
    p.add_argument(
        "--paired",
        nargs=2,
        metavar=("A", "B"),
        help="with --pool: per-twin values of methods A and B and their paired difference",
    )
    p.add_argument(
        "--versus",
        nargs="+",
        type=Path,
        help="with --pool: each method and level against the same method in these folders, "
        "paired by twin seed (e.g. the same table with another emulator)",
    )
    p.add_argument("--metric", default="skill", help="with --table: skill, crps, spread")
    p.add_argument(
        "--tag",
        default="",
        help="figure: the FA-APF run files' tag between 'fa-apf-' and '-N' "
        "(e.g. mean_sigma0.5; default: none, the paper's mean)",
    )
    args = p.parse_args()
    if args.table:
        print(table(args.folder, args.table, args.metric))
        return
    if args.pool is not None:
        folders = [args.folder, *args.pool]
        if args.versus:
            print(versus_table(folders, args.versus, args.metric))
        elif args.paired:
            print(paired_table(folders, *args.paired, args.metric))
        else:
            print(pooled_table(folders, args.metric))
        return
    if args.out is None:
        raise SystemExit("--out is required for the figure")
    want = "fa-apf" + (f"-{args.tag}" if args.tag else "")
    cells = []
    for path in sorted((args.folder / "runs").glob("*-fa-apf*-N*.nc")):
        m = RUN.search(path.name)
        if m and m.group(4) == want:
            cells.append((m.group(2), int(m.group(3)), int(m.group(1)), path))
    if not cells:
        raise SystemExit(f"no FA-APF run files tagged {args.tag!r} under {args.folder / 'runs'}")
    cells.sort(key=lambda c: (c[1], c[0]))
    fig, axes = plt.subplots(len(cells), 4, figsize=(10, 2.6 * len(cells)), squeeze=False)
    for row, (kind, level, size, path) in zip(axes, cells):
        with xr.open_dataset(path) as ds:
            last = ds.sizes["step"] - 1
            truth = ds["truth"].isel(run=args.run, step=last).values
            mean = ds["mean"].isel(run=args.run, step=last).values
            spread = ds["spread"].isel(run=args.run, step=last).values
            obs = ds["observations"].isel(run=args.run, step=last).values
            step = int(ds["step"].values[last])
        lim = float(np.abs(truth).max())
        err = float(np.sqrt(np.mean((mean - truth) ** 2)))
        panels = [
            (truth, "truth", "RdBu_r", (-lim, lim)),
            (observation_image(obs, kind, level, size), f"{kind} {level}", "RdBu_r", (-lim, lim)),
            (mean, f"FA-APF mean (RMSE {err:.2f})", "RdBu_r", (-lim, lim)),
            (spread, "FA-APF spread", "viridis", (0.0, None)),
        ]
        for ax, (img, title, cmap, (lo, hi)) in zip(row, panels):
            cm = matplotlib.colormaps[cmap].copy()
            cm.set_bad("0.85")
            im = ax.imshow(img.T, origin="lower", cmap=cm, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        row[0].set_ylabel(f"{size}², cycle {step}", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
