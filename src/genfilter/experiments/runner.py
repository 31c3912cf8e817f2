r"""Runs an :class:`~genfilter.experiments.config.ExperimentConfig` and writes one
netCDF file (``genfilter filter <config>``; DESIGN.md Command line).

File layout (dims ``run, step, member, <state dims>, obs``; CF-style attributes):

- ``truth (run, step, *S)``, ``observations (run, step, obs)`` (NaN = missing);
- ``particles (run, step, member, *S)`` and ``log_weights (run, step, member)`` when
  ``save: particles``; ``mean`` and ``spread (run, step, *S)`` always;
- the StepInfo traces ``ess``, ``inflation``, ``log_evidence``, ``seconds (run, step)``;
- per-step metrics ``skill``, ``spread_metric``, ``ssr``, ``crps (run, step)`` (SPEC §6) and
  their averages after the burn-in, ``summary_<metric> (run)``;
- attributes: the config as YAML, the genfilter version and git commit, the command.

Resume: while running, every run checkpoints after each step into ``<out>.parts/`` (with
the config); ``resume=True`` continues a killed run from the last completed step and the
result is bit-identical to an uninterrupted run (particles, weights, metrics; the
``seconds`` trace is wall time and differs).  The netCDF file appears atomically at the end.
"""

from __future__ import annotations

__all__ = ["build_twin_setup", "build_emulator", "build_filter", "run_config", "git_version"]

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from .._utils import make_generator
from ..filters.base import FilterRun, assimilate
from ..observations import Identity, Select, Subsample
from .config import ExperimentConfig, parse_config
from .twin import TwinSetup, climatology, make_twin

METRICS = ("skill", "spread", "ssr", "crps")
_METRIC_VARS = {"skill": "skill", "spread": "spread_metric", "ssr": "ssr", "crps": "crps"}


def git_version() -> str:
    """``<commit>[-dirty]`` of the source tree genfilter runs from, or ``"unknown"``."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_twin_setup(cfg: ExperimentConfig) -> TwinSetup:
    """The twin (truth, observations, initial ensemble) of a config.  Float32 states, as
    the emulators; the same for every filter and emulator of a config, so rows of a table
    share their twins."""
    from ..systems.datasets import make_system

    system = make_system(cfg.system, **cfg.system_options)
    o = cfg.observations
    size = math.prod(system.state_shape)
    if o.operator == "select":
        bad = [i for i in o.indices if i >= size]
        if bad:
            raise ValueError(f"config field 'observations.indices': {bad[0]} is out of range "
                             f"for a state of {size} values")
        operator = Select(list(o.indices))
    elif o.operator == "identity":
        operator = Identity()
    else:
        operator = Subsample(o.stride, dims=len(system.state_shape))
    return TwinSetup(
        name=cfg.name, system=system, operator=operator, noise_std=o.noise_std,
        cycles=cfg.steps, burn_in=cfg.burn_in, init=cfg.initial.recipe,
        init_std=cfg.initial.std, spinup=cfg.initial.spinup, dtype=torch.float32,
        description=f"{cfg.system}, {o.operator} observations, noise std {o.noise_std}",
    )


def build_emulator(cfg: ExperimentConfig, setup: TwinSetup):
    """The forecast model: the shipped emulator, the true system, or a checkpoint."""
    if cfg.emulator == "true":
        return setup.system.as_emulator()
    if cfg.emulator == "shipped":
        from .l63 import load_shipped_emulator

        return load_shipped_emulator(**cfg.emulator_options)
    from ..emulators.training import load_emulator

    return load_emulator(cfg.emulator, **cfg.emulator_options)


def build_filter(cfg: ExperimentConfig, emulator, setup: TwinSetup, generator):
    """The filter of a config with its options (EnSF / EnFF are normalised with the
    system's climatology unless ``mean`` / ``std`` are given)."""
    from .config import _filter_class

    cls = _filter_class(cfg.filter.method)
    options = dict(cfg.filter.options)
    if cfg.filter.method in ("ensf", "enff"):
        clim = climatology(setup)
        options.setdefault("mean", clim.mean)
        options.setdefault("std", clim.std)
    if cfg.filter.method == "bpf" and "jitter" in options:
        from .twin import Jittered

        emulator = Jittered(emulator, options.pop("jitter"))
    try:
        return cls(emulator, generator=generator, **options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config field 'filter.options': {exc}") from None


def run_seed(cfg: ExperimentConfig, run: int) -> tuple[int, int]:
    """``(twin seed, filter seed)`` of run ``run``: the twin depends on the config seed and
    the run only, so every filter of a table sees the same twins."""
    twin_seed = cfg.seed + run
    return twin_seed, 1_000_003 * (twin_seed + 1) + 7919 * cfg.filter.particles + 17


def _state_dims(cfg: ExperimentConfig, ndim: int) -> list[str]:
    from ..systems.datasets import SYSTEMS

    dims = list(SYSTEMS[cfg.system].state_dims)
    return dims if len(dims) == ndim else [f"dim_{i}" for i in range(ndim)]


def run_config(
    cfg: ExperimentConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
    label: str | None = None,
) -> Path:
    """Runs every run of ``cfg`` and writes ``out`` (netCDF; module docstring); ``label``
    names the filter in reports (default: the method)."""
    import yaml

    out = Path(out)
    if out.suffix != ".nc":
        raise ValueError(f"out must be a .nc file, got {out}")
    parts = out.with_name(out.name + ".parts")
    cfg_text = cfg.to_yaml()
    if parts.exists():
        if not resume:
            raise FileExistsError(
                f"{parts} holds an unfinished run of this output; pass --resume to continue "
                "it, or delete the folder to start again"
            )
        saved = parts / "config.yaml"
        if saved.is_file() and parse_config(yaml.safe_load(saved.read_text())) != cfg:
            raise ValueError(f"--resume: the config differs from the one of the unfinished run "
                             f"in {parts} ({saved}); delete the folder to start again")
    parts.mkdir(parents=True, exist_ok=True)
    (parts / "config.yaml").write_text(cfg_text)

    setup = build_twin_setup(cfg)
    emulator = build_emulator(cfg, setup)
    runs: list[FilterRun] = []
    twins = []
    t_start = time.perf_counter()
    for r in range(cfg.runs):
        twin_seed, filter_seed = run_seed(cfg, r)
        twin = make_twin(setup, twin_seed)
        filt = build_filter(cfg, emulator, setup, make_generator(filter_seed))
        desc = f"{cfg.filter.method} run {r + 1}/{cfg.runs}"
        run = assimilate(filt, twin.initial_ensemble(cfg.filter.particles), twin.observations,
                         truth=twin.truth, progress=progress, desc=desc,
                         checkpoint=parts / f"run{r:04d}.pt",
                         save_particles=cfg.save == "particles")
        runs.append(run)
        twins.append(twin)

    ds = _to_dataset(cfg, setup, runs, twins)
    ds.attrs.update({
        "title": f"genfilter {cfg.filter.method} on {cfg.name}",
        "Conventions": "CF-1.10",
        "source": f"genfilter {__version__} (git {git_version()})",
        "history": f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {command or ' '.join(sys.argv)}",
        "config": cfg_text,
        "method": cfg.filter.method,
        "label": label or cfg.filter.method,
        "experiment": cfg.name,
        "particles": cfg.filter.particles,
        "burn_in": cfg.burn_in,
        "interval": float(setup.system.interval),
        "wall_seconds": time.perf_counter() - t_start,
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    ds.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, out)
    shutil.rmtree(parts)
    return out


def _to_dataset(cfg, setup, runs: list[FilterRun], twins):
    import xarray as xr

    from ..metrics import summarize

    S = tuple(setup.system.state_shape)
    sd = _state_dims(cfg, len(S))
    K = cfg.steps

    def stack(ts):
        return np.stack([t.detach().double().cpu().numpy() for t in ts])

    obs = np.stack([np.stack([o.y.double().cpu().numpy() for o in tw.observations])
                    for tw in twins])
    data: dict[str, Any] = {
        "truth": (("run", "step", *sd), stack([tw.truth for tw in twins]),
                  {"long_name": "true state", "units": "state units"}),
        "observations": (("run", "step", "obs"), obs,
                         {"long_name": "observations y = H(x) + noise (NaN: missing)",
                          "units": "state units", "noise_std": setup.noise_std}),
        "mean": (("run", "step", *sd), stack([r.means for r in runs]),
                 {"long_name": "weighted ensemble mean", "units": "state units"}),
        "spread": (("run", "step", *sd), stack([r.spreads for r in runs]),
                   {"long_name": "weighted ensemble standard deviation", "units": "state units"}),
    }
    if cfg.save == "particles":
        data["particles"] = (("run", "step", "member", *sd), stack([r.particles for r in runs]),
                             {"long_name": "ensemble members after the analysis",
                              "units": "state units"})
        data["log_weights"] = (("run", "step", "member"), stack([r.log_weights for r in runs]),
                               {"long_name": "normalised log-weights", "units": "1"})
    traces = {
        "ess": ("effective sample size before resampling", "members"),
        "inflation": ("observation-covariance inflation beta (1: none)", "1"),
        "log_evidence": ("log-evidence increment log p(y^k | y^{1:k-1})", "nats"),
        "seconds": ("wall time of the step", "s"),
    }
    for name, (long, units) in traces.items():
        data[name] = (("run", "step"), stack([r.trace(name) for r in runs]),
                      {"long_name": long, "units": units})
    described = {
        "skill": "RMSE of the ensemble mean (SPEC §6)",
        "spread": "ensemble standard deviation (SPEC §6)",
        "ssr": "spread / skill (SPEC §6)",
        "crps": "continuous ranked probability score (SPEC §6, Eq. 37)",
    }
    for m in METRICS:
        per_step = stack([r.metrics[m] if r.metrics[m].ndim == 1 else r.metrics[m].mean(-1)
                          for r in runs])
        var = _METRIC_VARS[m]
        data[var] = (("run", "step"), per_step,
                     {"long_name": described[m], "units": "1" if m == "ssr" else "state units"})
        data[f"summary_{m}"] = (("run",), np.array([summarize(r.metrics, burn_in=cfg.burn_in)[m]
                                                    for r in runs]),
                                {"long_name": f"{m} averaged over steps after the burn-in",
                                 "burn_in": cfg.burn_in})
    coords = {
        "run": np.arange(cfg.runs),
        "step": np.arange(1, K + 1),
        "time": ("step", np.arange(1, K + 1) * float(setup.system.interval),
                 {"long_name": "model time of the observation", "units": "model time units"}),
        "twin_seed": ("run", np.array([run_seed(cfg, r)[0] for r in range(cfg.runs)])),
    }
    return xr.Dataset({k: xr.Variable(v[0], v[1], v[2]) for k, v in data.items()}, coords=coords)
