r"""``genfilter report <run.nc | dir>``: tables (markdown, CSV) and PNG figures from the
netCDF files of ``genfilter filter`` / ``genfilter experiment``.

For one file, into ``<file stem>_report/``:

- ``summary.md`` / ``summary.csv``: skill, spread, SSR, CRPS after the burn-in, mean ±
  standard error over runs, and the mean ESS;
- ``skill_spread.png``: skill (RMSE of the ensemble mean over runs) and spread per variable
  against model time;
- ``trajectories.png``: run 0, per variable: truth, observations, ensemble mean ± spread;
- ``rank_histogram.png``: rank of the truth among the members, per variable (when the
  particles were saved; flat = calibrated);
- ``ess_inflation.png``: ESS / N and the inflation β per step (mean over runs).

For a folder (e.g. an experiment's output), into the folder: ``report.md`` / ``report.csv``
(one row per file), ``skill_vs_n_<name>.png`` (skill against N per filter, log-log, with
standard errors) when files differ in N, and for each experiment name the comparison
figures ``skill_vs_step_<name>.png``, ``rank_histograms_<name>.png``,
``ess_<name>.png`` and, for runs with the posterior predictive check,
``pit_histograms_<name>.png`` at the largest N that most filters share.
"""

from __future__ import annotations

__all__ = ["report", "summarize_file"]

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..io import RunFileError, open_run

_METRICS = ("skill", "spread", "ssr", "crps")


def _open(path: Path):
    return open_run(path)


def _state_names(ds) -> tuple[list[str], list[str]]:
    dims = [d for d in ds["truth"].dims if d not in ("run", "step")]
    names = []
    shape = [ds.sizes[d] for d in dims]
    if len(shape) == 1:
        names = [f"x{i + 1}" for i in range(shape[0])]
    return dims, names


def summarize_file(path: str | Path) -> dict[str, Any]:
    """One row: label, experiment, N, runs, the four metrics ± standard error, mean ESS,
    wall seconds, and whether the particles were saved."""
    path = Path(path)
    with _open(path) as ds:
        if "summary_skill" not in ds or "truth" not in ds:
            raise RunFileError(
                f"{path} has no truth and metrics: the run cannot be scored "
                "(assimilate(..., truth=...) records them)"
            )
        row: dict[str, Any] = {
            "file": path.name,
            "experiment": ds.attrs.get("experiment", ""),
            "filter": ds.attrs.get("label", ds.attrs.get("method", "")),
            "N": int(ds.attrs.get("particles", ds.sizes.get("member", 0))),
            "runs": int(ds.sizes["run"]),
            "burn_in": int(ds.attrs.get("burn_in", 0)),
        }
        for m in _METRICS:
            v = ds[f"summary_{m}"].values
            row[m] = float(v.mean())
            row[f"{m}_se"] = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
        row["mean_ess"] = float(np.nanmean(ds["ess"].values))
        # total log-evidence of each run, averaged over runs (NaN for filters without one)
        row["log_evidence"] = float(ds["log_evidence"].values.sum(axis=1).mean())
        row["seconds"] = float(ds.attrs.get("wall_seconds", math.nan))
        row["has_particles"] = "particles" in ds
        for level in (50, 90):
            v = f"predictive_coverage_{level}"
            row[f"coverage_{level}"] = float(np.nanmean(ds[v].values)) if v in ds else math.nan
    return row


def twin_values(paths, metric: str = "skill") -> dict[int, float]:
    """``summary_<metric>`` of every run of the run files ``paths``, by twin seed (the run
    files' ``twin_seed`` coordinate), to pair runs of other files on the same twins; a twin
    seed in two files (or twice in one) raises ``ValueError`` naming it."""
    values: dict[int, float] = {}
    where: dict[int, Path] = {}
    for path in map(Path, paths):
        with _open(path) as ds:
            seeds, v = ds["twin_seed"].values, ds[f"summary_{metric}"].values
        for seed, value in zip(seeds.tolist(), v.tolist(), strict=True):
            if seed in values:
                raise ValueError(f"twin seed {seed} is in {where[seed]} and in {path}")
            values[seed], where[seed] = float(value), path
    return values


def _table(rows: list[dict], out_md: Path, out_csv: Path, title: str) -> None:
    keys = (
        ["experiment", "filter", "N", "runs", "burn_in"]
        + [k for m in _METRICS for k in (m, f"{m}_se")]
        + ["mean_ess", "coverage_50", "coverage_90", "file"]
    )
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in keys})

    def f(r, m, d=3):
        se = r[f"{m}_se"]
        return f"{r[m]:.{d}f}" + (f" ± {se:.{d}f}" if math.isfinite(se) else "")

    check = any(math.isfinite(r["coverage_90"]) for r in rows)
    head = "| experiment | filter | N | runs | skill | spread | SSR | CRPS | mean ESS |"
    if check:
        head += " predictive 50 % / 90 % coverage |"
    lines = [
        f"# {title}",
        "",
        "Averages after the burn-in; ± is the standard error over runs.",
        "",
        head,
        "|---" * head.count(" | ") + "|---|",
    ]
    for r in rows:
        line = (
            f"| {r['experiment']} | {r['filter']} | {r['N']} | {r['runs']} | "
            f"{f(r, 'skill')} | {f(r, 'spread')} | {f(r, 'ssr', 2)} | {f(r, 'crps')} | "
            f"{r['mean_ess']:.1f} |"
        )
        if check:
            line += (
                f" {r['coverage_50']:.2f} / {r['coverage_90']:.2f} |"
                if math.isfinite(r["coverage_90"])
                else " — |"
            )
        lines.append(line)
    out_md.write_text("\n".join(lines) + "\n")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, written: list[Path]) -> None:
    """Lays out, writes and closes a figure; appends its path to ``written``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    written.append(path)
    _plt().close(fig)


def _per_variable(ds, name: str) -> np.ndarray:
    """``(run, step, V)`` view of a state variable (V = flattened state)."""
    v = ds[name].values
    return v.reshape(v.shape[0], v.shape[1], -1)


def _ranks(ds) -> np.ndarray | None:
    """Rank of the truth among the members, ``(run*step, V)``, after the burn-in."""
    if "particles" not in ds:
        return None
    b = int(ds.attrs.get("burn_in", 0))
    p = ds["particles"].values[:, b:]
    p = p.reshape(p.shape[0], p.shape[1], p.shape[2], -1)
    t = _per_variable(ds, "truth")[:, b:, None, :]
    return (p < t).sum(2).reshape(-1, p.shape[-1])


def _pit_values(ds) -> np.ndarray:
    """The finite PIT values of a run file after its burn-in, flattened."""
    v = ds["pit"].values[:, int(ds.attrs.get("burn_in", 0)) :].ravel()
    return v[np.isfinite(v)]


def _pit_panel(ax, pit: np.ndarray) -> None:
    """A PIT histogram (density, 10 bins) with the calibrated level dashed."""
    ax.hist(pit, bins=10, range=(0, 1), density=True, color="C2", alpha=0.8)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="calibrated")


def _file_figures(path: Path, out: Path) -> list[Path]:
    plt = _plt()
    written = []
    with _open(path) as ds:
        label = ds.attrs.get("label", ds.attrs.get("method", ""))
        N = int(ds.attrs.get("particles", 0))
        time_ = ds["time"].values
        _, names = _state_names(ds)
        mean, truth = _per_variable(ds, "mean"), _per_variable(ds, "truth")
        spread = _per_variable(ds, "spread")
        V = truth.shape[-1]
        show = list(range(min(V, 3)))
        names = names or [f"value {i}" for i in range(V)]
        title = f"{label}, N = {N}, {ds.sizes['run']} run(s)"

        fig, axes = plt.subplots(
            len(show), 1, figsize=(9, 2.4 * len(show)), sharex=True, squeeze=False
        )
        for ax, d in zip(axes[:, 0], show):
            ax.plot(
                time_, np.sqrt(((mean[..., d] - truth[..., d]) ** 2).mean(0)), label="skill (RMSE)"
            )
            ax.plot(time_, np.sqrt((spread[..., d] ** 2).mean(0)), label="spread", ls="--")
            ax.set_ylabel(f"{names[d]} [state units]")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0, 0].legend(loc="upper right")
        axes[0, 0].set_title(f"Skill and spread per variable: {title}")
        axes[-1, 0].set_xlabel("model time")
        _save(fig, out / "skill_spread.png", written)

        fig, axes = plt.subplots(
            len(show), 1, figsize=(9, 2.4 * len(show)), sharex=True, squeeze=False
        )
        obs = ds["observations"].values[0] if "observations" in ds else None
        cfg_idx = _observed_indices(ds)
        for ax, d in zip(axes[:, 0], show):
            ax.plot(time_, truth[0, :, d], color="k", lw=1.2, label="truth")
            ax.plot(time_, mean[0, :, d], color="C0", lw=1.0, label="ensemble mean")
            ax.fill_between(
                time_,
                mean[0, :, d] - spread[0, :, d],
                mean[0, :, d] + spread[0, :, d],
                color="C0",
                alpha=0.3,
                label="mean ± spread",
            )
            if obs is not None and cfg_idx is not None and d in cfg_idx:
                ax.plot(
                    time_, obs[:, cfg_idx.index(d)], ".", color="C3", ms=3, label="observations"
                )
            ax.set_ylabel(f"{names[d]} [state units]")
            ax.grid(alpha=0.3)
        axes[0, 0].legend(loc="upper right", fontsize=8, ncol=4)
        axes[0, 0].set_title(f"Run 0: truth, observations and ensemble: {title}")
        axes[-1, 0].set_xlabel("model time")
        _save(fig, out / "trajectories.png", written)

        ranks = _ranks(ds)
        if ranks is not None:
            fig, axes = plt.subplots(1, len(show), figsize=(3.2 * len(show), 2.8), squeeze=False)
            for ax, d in zip(axes[0], show):
                ax.hist(
                    ranks[:, d],
                    bins=min(N + 1, 17),
                    range=(0, N + 1),
                    density=True,
                    color="C0",
                    alpha=0.8,
                )
                ax.axhline(1 / (N + 1), color="k", ls="--", lw=1, label="calibrated")
                ax.set_xlabel(f"rank of the truth ({names[d]})")
                ax.set_ylabel("frequency")
            axes[0, 0].legend(fontsize=8)
            fig.suptitle(f"Rank histograms after the burn-in: {title}")
            _save(fig, out / "rank_histogram.png", written)

        if "pit" in ds:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            _pit_panel(ax, _pit_values(ds))
            ax.set_xlabel("PIT of the observation under the one-step predictive")
            ax.set_ylabel("density")
            ax.legend(fontsize=8)
            ax.set_title(f"Posterior predictive check: {title}", fontsize=9)
            _save(fig, out / "pit_histogram.png", written)

        fig, ax = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True)
        ax[0].plot(time_, np.nanmean(ds["ess"].values, 0) / max(N, 1))
        ax[0].set_ylabel("ESS / N")
        ax[0].set_ylim(0, 1.05)
        ax[1].plot(time_, np.nanmean(ds["inflation"].values, 0), color="C1")
        ax[1].set_ylabel("inflation β")
        ax[1].set_yscale("log")
        ax[1].set_xlabel("model time")
        for a in ax:
            a.grid(alpha=0.3)
        ax[0].set_title(f"ESS before resampling and likelihood inflation (mean over runs): {title}")
        _save(fig, out / "ess_inflation.png", written)
    return written


def _observed_indices(ds) -> list[int] | None:
    import yaml

    try:
        cfg = yaml.safe_load(ds.attrs.get("config", ""))
        idx = cfg["observations"]["indices"]
        return list(idx) if idx is not None else None
    except Exception:
        return None


def _dir_figures(rows: list[dict], files: dict[str, Path], out: Path) -> list[Path]:
    plt = _plt()
    written = []
    by_exp: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_exp[r["experiment"]].append(r)
    for exp, rs in sorted(by_exp.items()):
        filters = sorted({r["filter"] for r in rs}, key=lambda f: (f.startswith("Bayes"), f))
        ns = sorted({r["N"] for r in rs if not r["filter"].startswith("Bayes")})
        slug = "".join(c if c.isalnum() else "-" for c in exp) or "runs"
        if len(ns) > 1:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for i, f in enumerate(filters):
                pts = sorted((r["N"], r["skill"], r["skill_se"]) for r in rs if r["filter"] == f)
                if f.startswith("Bayes"):
                    ax.axhline(pts[0][1], color="k", ls=":", label=f"{f} (N = {pts[0][0]})")
                    continue
                x, y, e = (np.array(v, dtype=float) for v in zip(*pts))
                ax.errorbar(
                    x, y, yerr=np.nan_to_num(e), marker="o", ms=4, capsize=3, label=f, color=f"C{i}"
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("ensemble size N")
            ax.set_ylabel("skill: RMSE of the ensemble mean [state units]")
            ax.set_title(f"{exp}: skill against ensemble size (mean ± s.e. over runs)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
            _save(fig, out / f"skill_vs_n_{slug}.png", written)
        # comparison at the largest N shared by most filters
        counts = defaultdict(int)
        for r in rs:
            counts[r["N"]] += 1
        n_cmp = max(counts, key=lambda n: (counts[n], n))
        sel = [r for r in rs if r["N"] == n_cmp or r["filter"].startswith("Bayes")]
        sel.sort(key=lambda r: (r["filter"].startswith("Bayes"), r["filter"]))
        with_particles = [r for r in sel if r["has_particles"]]
        cols = min(4, max(1, len(with_particles)))
        nrows = max(1, math.ceil(len(with_particles) / cols))
        fig, ax = plt.subplots(figsize=(9, 4))
        fig2, ax2 = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
        for a in ax2.flat[len(with_particles) :]:
            a.set_visible(False)
        fig3, ax3 = plt.subplots(figsize=(9, 3.5))
        pits: list[tuple[str, np.ndarray]] = []  # (filter, PIT values after the burn-in)
        for r in sel:
            with _open(files[r["file"]]) as ds:
                if "pit" in ds:
                    pits.append((r["filter"], _pit_values(ds)))
                t = ds["time"].values
                sk = np.sqrt(np.nanmean(ds["skill"].values ** 2, 0))
                style = dict(color="k", ls=":") if r["filter"].startswith("Bayes") else {}
                ax.plot(t, sk, label=f"{r['filter']} (N = {r['N']})", **style)
                if r["has_particles"]:
                    a = ax2.flat[with_particles.index(r)]
                    ranks = _ranks(ds)
                    a.hist(
                        ranks.ravel(),
                        bins=min(r["N"] + 1, 17),
                        range=(0, r["N"] + 1),
                        density=True,
                        alpha=0.8,
                    )
                    a.axhline(1 / (r["N"] + 1), color="k", ls="--", lw=1)
                    a.set_title(r["filter"], fontsize=9)
                    a.set_xlabel("rank of the truth")
                ess = np.nanmean(ds["ess"].values, 0) / r["N"]
                if not r["filter"].startswith("Bayes") and np.nanmin(ess) < 0.999:
                    ax3.plot(t, ess, label=r["filter"])  # ensemble Kalman-type filters: ESS = N
        for a in ax2[:, 0]:
            a.set_ylabel("frequency")
        ax.set_yscale("log")
        ax.set_xlabel("model time")
        ax.set_ylabel("skill (RMS over runs) [state units]")
        ax.set_title(f"{exp}: skill per step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        ax3.set_xlabel("model time")
        ax3.set_ylabel("ESS / N (before resampling)")
        ax3.set_title(f"{exp}: ESS of the weighted filters, N = {n_cmp} (mean over runs)")
        ax3.grid(alpha=0.3)
        ax3.legend(fontsize=8, ncol=3)
        fig2.suptitle(
            f"{exp}: rank histograms of the truth, all variables, N = {n_cmp} (dashed: calibrated)",
            fontsize=10,
        )
        for f_, name in ((fig, "skill_vs_step"), (fig2, "rank_histograms"), (fig3, "ess")):
            _save(f_, out / f"{name}_{slug}.png", written)
        if pits:
            cols = min(4, len(pits))
            nrows = math.ceil(len(pits) / cols)
            fig4, ax4 = plt.subplots(
                nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False, sharey=True
            )
            for a in ax4.flat[len(pits) :]:
                a.set_visible(False)
            for a, (name, v) in zip(ax4.flat, pits, strict=False):
                _pit_panel(a, v)
                a.set_title(name, fontsize=9)
                a.set_xlabel("PIT of the observation")
            for a in ax4[:, 0]:
                a.set_ylabel("density")
            fig4.suptitle(
                f"{exp}: posterior predictive check, N = {n_cmp} (dashed: calibrated)",
                fontsize=10,
            )
            _save(fig4, out / f"pit_histograms_{slug}.png", written)
        _trajectories(
            exp,
            [r for r in sel if not r["filter"].startswith("Bayes")],
            files,
            out / f"trajectories_{slug}.png",
            written,
        )
    return written


def _trajectories(
    exp: str, rows: list[dict], files: dict[str, Path], path: Path, written: list[Path]
) -> None:
    """Run 0 of every filter of ``rows``: truth, observations and ensemble mean ± spread,
    one panel per variable (the first three)."""
    if not rows:
        return
    plt = _plt()
    with _open(files[rows[0]["file"]]) as ds:
        t = ds["time"].values
        truth = _per_variable(ds, "truth")[0]
        obs = ds["observations"].values[0] if "observations" in ds else None
        idx = _observed_indices(ds)
        _, names = _state_names(ds)
    show = list(range(min(truth.shape[-1], 3)))
    names = names or [f"value {i}" for i in range(truth.shape[-1])]
    fig, axes = plt.subplots(
        len(show), 1, figsize=(10, 2.6 * len(show)), sharex=True, squeeze=False
    )
    for ax, d in zip(axes[:, 0], show):
        ax.plot(t, truth[:, d], "k-", lw=1.6, label="truth")
        if obs is not None and idx is not None and d in idx:
            ax.plot(t, obs[:, idx.index(d)], "k.", ms=3, label="observation")
        ax.set_ylabel(f"{names[d]} [state units]")
        ax.grid(alpha=0.3)
    for r in rows:
        with _open(files[r["file"]]) as ds:
            mean, spread = _per_variable(ds, "mean")[0], _per_variable(ds, "spread")[0]
        for ax, d in zip(axes[:, 0], show):
            (line,) = ax.plot(t, mean[:, d], lw=1.0, label=f"{r['filter']} mean ± spread")
            ax.fill_between(
                t,
                mean[:, d] - spread[:, d],
                mean[:, d] + spread[:, d],
                color=line.get_color(),
                alpha=0.2,
            )
    axes[0, 0].legend(fontsize=8, ncol=3, loc="upper left")
    axes[0, 0].set_title(f"{exp}: run 0, truth, observations and ensembles (N = {rows[0]['N']})")
    axes[-1, 0].set_xlabel("model time")
    _save(fig, path, written)


def report(path: str | Path) -> list[Path]:
    """Writes the tables and figures of a run file or a folder of them (module docstring);
    returns the paths written."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".nc":
            raise ValueError(f"report needs a .nc run file or a folder of them, got {path}")
        row = summarize_file(path)  # before any folder is made: a bad file leaves nothing
        out = path.with_name(path.stem + "_report")
        out.mkdir(exist_ok=True)
        _table(
            [row],
            out / "summary.md",
            out / "summary.csv",
            f"{row['filter']} on {row['experiment']}",
        )
        return [out / "summary.md", out / "summary.csv", *_file_figures(path, out)]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    files = sorted(p for p in path.rglob("*.nc") if ".parts" not in p.parent.name)
    if not files:
        raise FileNotFoundError(f"no .nc run files under {path}")
    rows = [summarize_file(f) for f in files]
    rows.sort(key=lambda r: (r["experiment"], r["filter"].startswith("Bayes"), r["filter"], r["N"]))
    _table(rows, path / "report.md", path / "report.csv", f"genfilter runs under {path}")
    return [
        path / "report.md",
        path / "report.csv",
        *_dir_figures(rows, {f.name: f for f in files}, path),
    ]
