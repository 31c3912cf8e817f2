r"""The one run file format: one writer (:func:`write_run`), one reader (:func:`open_run`).

Every command that filters (``genfilter demo``, ``filter``, ``experiment``) writes its runs
with :func:`run_dataset` + :func:`write_run`, and every command that reads runs
(``genfilter report``, the experiment tables) opens them with :func:`open_run`.  A run file
is netCDF (h5netcdf engine) with CF-style attributes and the dims ``run, step, member,
<state dims>, obs``:

- ``truth (run, step, *S)`` and ``observations (run, step, obs)`` (NaN = missing) when
  known;
- ``mean`` and ``spread (run, step, *S)``: the weighted ensemble mean and standard
  deviation after each analysis;
- ``particles (run, step, member, *S)`` and ``log_weights (run, step, member)`` when the
  members were saved;
- the step diagnostics of :class:`~genfilter.filters.base.StepInfo` as ``(run, step)``
  traces (:data:`~genfilter.filters.base.TRACES`: ``ess``, ``inflation``,
  ``log_evidence``, ``seconds``, ``ess_untempered``, ``target_met``, ...);
- with the truth, the per-step metrics ``skill``, ``spread_metric``, ``ssr``, ``crps``
  ``(run, step)`` (docs/method.md#metrics) and their averages after the burn-in,
  ``summary_<metric> (run)``;
- with the posterior predictive check, ``pit (run, step, obs)`` and
  ``predictive_coverage_50`` / ``_90 (run)`` (:mod:`genfilter.filters.predictive`);
- attributes: ``genfilter_format``, ``method``, ``label``, ``experiment``, ``particles``,
  ``burn_in``, ``interval`` and, when the run came from a config, the config as YAML.

The writer is atomic: the file appears complete (written to ``<file>.tmp`` first, then
renamed) or not at all.
"""

from __future__ import annotations

__all__ = [
    "FORMAT",
    "METRICS",
    "run_dataset",
    "check_run_path",
    "write_run",
    "open_run",
    "RunFileError",
]

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "genfilter-run/1"
METRICS = ("skill", "spread", "ssr", "crps")
_METRIC_VARS = {"skill": "skill", "spread": "spread_metric", "ssr": "ssr", "crps": "crps"}
_DESCRIBED = {
    "skill": "RMSE of the ensemble mean (docs/method.md#metrics)",
    "spread": "ensemble standard deviation (docs/method.md#metrics)",
    "ssr": "spread / skill (docs/method.md#metrics)",
    "crps": "continuous ranked probability score (docs/method.md#metrics)",
}
_REQUIRED = ("mean", "spread", "ess", "inflation")


class RunFileError(ValueError):
    """A file is not a readable genfilter run file; the message names the file."""


def _np(t) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def run_dataset(
    runs: Sequence[Any],
    *,
    observations: Sequence[Sequence[Any]] | None = None,
    state_dims: Sequence[str] | None = None,
    interval: float = 1.0,
    burn_in: int = 0,
    twin_seeds: Sequence[int] | None = None,
    attrs: dict[str, Any] | None = None,
):
    """The run file of one or more runs of one filter (module docstring).

    Arguments:
        runs: :class:`~genfilter.filters.base.FilterRun` objects with the same number of
            steps and state shape (the runs of one config: independent twins).
        observations: Per run, the ``K`` :class:`~genfilter.observations.Observation`
            objects (their ``y`` is stored).
        state_dims: Names of the state axes (default ``dim_0, dim_1, ...``).
        interval: Model time between observations (the ``time`` coordinate).
        burn_in: Steps left out of the ``summary_*`` averages.
        twin_seeds: Per run, the seed of its twin (a coordinate).
        attrs: Further attributes (method, label, experiment, config, ...).
    """
    import xarray as xr

    from .filters.base import TRACES
    from .metrics import summarize

    if not runs:
        raise ValueError("run_dataset needs at least one run")
    K = runs[0].steps
    S = tuple(runs[0].means.shape[1:])
    if any(r.steps != K or tuple(r.means.shape[1:]) != S for r in runs):
        raise ValueError("the runs of a run file must have the same steps and state shape")
    sd = list(state_dims) if state_dims is not None else [f"dim_{i}" for i in range(len(S))]
    if len(sd) != len(S):
        sd = [f"dim_{i}" for i in range(len(S))]
    data: dict[str, Any] = {
        "mean": (
            ("run", "step", *sd),
            np.stack([_np(r.means) for r in runs]),
            {"long_name": "weighted ensemble mean", "units": "state units"},
        ),
        "spread": (
            ("run", "step", *sd),
            np.stack([_np(r.spreads) for r in runs]),
            {"long_name": "weighted ensemble standard deviation", "units": "state units"},
        ),
    }
    with_truth = all(r.truth is not None for r in runs)
    if with_truth:
        data["truth"] = (
            ("run", "step", *sd),
            np.stack([_np(r.truth) for r in runs]),
            {"long_name": "true state", "units": "state units"},
        )
    if observations is not None:
        obs = np.stack([np.stack([_np(o.y) for o in per_run]) for per_run in observations])
        data["observations"] = (
            ("run", "step", "obs"),
            obs,
            {"long_name": "observations y = H(x) + noise (NaN: missing)", "units": "state units"},
        )
    if all(r.particles is not None for r in runs):
        data["particles"] = (
            ("run", "step", "member", *sd),
            np.stack([_np(r.particles) for r in runs]),
            {"long_name": "ensemble members after the analysis", "units": "state units"},
        )
        data["log_weights"] = (
            ("run", "step", "member"),
            np.stack([_np(r.log_weights) for r in runs]),
            {"long_name": "normalised log-weights", "units": "1"},
        )
    if all(getattr(r, "pit", None) is not None for r in runs):
        from .filters.predictive import coverage

        pit = np.stack([_np(r.pit) for r in runs])
        data["pit"] = (
            ("run", "step", "obs"),
            pit,
            {
                "long_name": "PIT of the observation under the one-step predictive "
                "(uniform when calibrated; NaN: missing)",
                "units": "1",
            },
        )
        for level in (50, 90):
            data[f"predictive_coverage_{level}"] = (
                ("run",),
                np.array([coverage(r.pit[burn_in:], level / 100) for r in runs]),
                {
                    "long_name": f"fraction of observations inside the central {level} % "
                    "predictive interval, after the burn-in",
                    "units": "1",
                    "burn_in": burn_in,
                },
            )
    for name, (long, units) in TRACES.items():
        data[name] = (
            ("run", "step"),
            np.stack([_np(r.trace(name)) for r in runs]),
            {"long_name": long, "units": units},
        )
    if with_truth and all(r.metrics for r in runs):
        for m in METRICS:
            per_step = np.stack(
                [
                    _np(r.metrics[m] if r.metrics[m].ndim == 1 else r.metrics[m].mean(-1))
                    for r in runs
                ]
            )
            data[_METRIC_VARS[m]] = (
                ("run", "step"),
                per_step,
                {"long_name": _DESCRIBED[m], "units": "1" if m == "ssr" else "state units"},
            )
            data[f"summary_{m}"] = (
                ("run",),
                np.array([summarize(r.metrics, burn_in=burn_in)[m] for r in runs]),
                {"long_name": f"{m} averaged over steps after the burn-in", "burn_in": burn_in},
            )
    coords: dict[str, Any] = {
        "run": np.arange(len(runs)),
        "step": np.arange(1, K + 1),
        "time": (
            "step",
            np.arange(1, K + 1) * float(interval),
            {"long_name": "model time of the observation", "units": "model time units"},
        ),
    }
    if twin_seeds is not None:
        coords["twin_seed"] = ("run", np.asarray(list(twin_seeds), dtype=np.int64))
    ds = xr.Dataset({k: xr.Variable(v[0], v[1], v[2]) for k, v in data.items()}, coords=coords)
    ds.attrs.update(
        {
            "Conventions": "CF-1.10",
            "genfilter_format": FORMAT,
            "burn_in": int(burn_in),
            "interval": float(interval),
            "particles": _members(runs[0]),
        }
    )
    for key, value in (attrs or {}).items():
        ds.attrs[key] = value
    return ds


def _members(run) -> int:
    if run.final is not None:
        return run.final.size
    if run.particles is not None:
        return int(run.particles.shape[1])
    return 0


def check_run_path(path: str | os.PathLike) -> Path:
    """Checks, before any work, that ``path`` can become a run file: it ends in ``.nc``, is
    not a folder, and no parent on its way is a regular file."""
    path = Path(path)
    if path.suffix != ".nc":
        raise ValueError(f"a run file must end in .nc, got {path}")
    if path.is_dir():
        raise ValueError(f"output {path} is a folder, not a file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"output {path} cannot be written: {parent} is a file")
            break
    return path


def write_run(ds, path: str | os.PathLike) -> Path:
    """Writes a run dataset to ``path`` (``.nc``) atomically.

    Raises:
        ValueError: ``path`` does not end in ``.nc``, is a folder, or cannot be written (the
            message names it and the cause); nothing is left behind.
    """
    path = check_run_path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise ValueError(f"cannot write the run file {path}: {exc.strerror or exc}") from None
    return path


def open_run(path: str | os.PathLike):
    """Opens a run file written by :func:`write_run` (an ``xarray.Dataset``; close it or use
    it as a context manager).

    Raises:
        FileNotFoundError: no such file.
        RunFileError: the file is not netCDF, or not a genfilter run (message names it).
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such run file: {path}")
    try:
        ds = xr.open_dataset(path, engine="h5netcdf")
    except Exception as exc:
        raise RunFileError(f"{path} is not a netCDF file ({type(exc).__name__})") from None
    missing = [v for v in _REQUIRED if v not in ds.variables]
    if missing or ("run" not in ds.dims or "step" not in ds.dims):
        ds.close()
        what = f"it has no {', '.join(missing)}" if missing else "it has no run/step dims"
        raise RunFileError(f"{path} is not a genfilter run file ({what})")
    return ds
