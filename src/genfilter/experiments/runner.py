r"""Runs an :class:`~genfilter.experiments.config.ExperimentConfig` and writes one
netCDF file (``genfilter filter <config>``; docs/experiments.md).

The file is the one run file format of :mod:`genfilter.io` (dims ``run, step, member,
<state dims>, obs``), with the config as YAML, the genfilter version and git commit and the
command in its attributes.

Seeds (the one seed scheme of genfilter): run ``r`` of a config uses the twin of seed
``cfg.seed + r`` (truth, observations and initial ensemble:
:func:`~genfilter.experiments.twin.make_twin`) and a filter generator seeded from that seed
and ``N`` (:func:`run_seed`), so every filter of a table sees the same twins.

Resume: while running, every run checkpoints after each step into ``<out>.parts/`` (with
the config); ``resume=True`` continues a killed run from the last completed step and the
result is bit-identical to an uninterrupted run (particles, weights, metrics; the
``seconds`` trace is wall time and differs).  The netCDF file appears atomically at the end.

Under ``torchrun`` (``torchrun --nproc-per-node P genfilter filter cfg.yaml``) every
process runs the config with its share of the particles (:mod:`genfilter.distributed`;
FA-APF and the bootstrap PF) and rank 0 alone writes the checkpoints and the file, which
is bit-identical to the one-process file on CPU.
The ``.parts`` folder is made only once the twin, the emulator and the filter are built,
and removed again when a fresh run fails, so a bad config never blocks the corrected rerun.
While a process writes it, ``.parts/lock`` holds its PID and host: a second process that
would write the same output (``--resume`` of a run in progress, or two ``genfilter
experiment`` processes on one folder) stops with an error instead of interleaving
checkpoints; a lock whose process is gone (same host) is taken over.
"""

from __future__ import annotations

__all__ = [
    "build_twin_setup",
    "build_emulator",
    "build_filter",
    "run_seed",
    "run_one",
    "run_summary",
    "run_config",
    "git_version",
]

import dataclasses
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._utils import make_generator
from .._version import __version__
from ..emulators.simulator import true_model
from ..filters.base import FilterRun, assimilate
from ..io import check_run_path, open_run, run_dataset, write_run
from ..observations import Coarsen, Identity, Select, Subsample
from .config import (
    WRAPPER_OPTIONS,
    ConfigError,
    ExperimentConfig,
    field_of,
    filter_class,
    parse_config,
)
from .twin import TwinSetup, climatology, make_twin


def git_version() -> str:
    """``<commit>[-dirty]`` of the source tree genfilter runs from, or ``"unknown"``."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_twin_setup(cfg: ExperimentConfig) -> TwinSetup:
    """The twin (system, observation model, initial recipe) of a config; the same for every
    filter and emulator of a config, so rows of a table share their twins."""
    from ..systems.datasets import make_system

    system = make_system(cfg.system, **cfg.system_options)
    o = cfg.observations
    size = math.prod(system.state_shape)
    if o.operator == "select":
        bad = [i for i in o.indices if i >= size]
        if bad:
            raise ConfigError(
                f"config field 'observations.indices': {bad[0]} is out of range "
                f"for a state of {size} values"
            )
        operator = Select(list(o.indices))
    elif o.operator == "identity":
        operator = Identity()
    elif o.operator == "coarsen":
        bad = [n for n in system.state_shape if n % o.factor]
        if bad:
            raise ConfigError(
                f"config field 'observations.factor': {o.factor} does not divide the state "
                f"shape {tuple(system.state_shape)}"
            )
        operator = Coarsen(o.factor, dims=len(system.state_shape))
    else:
        operator = Subsample(o.stride, dims=len(system.state_shape))
    return TwinSetup(
        name=cfg.name,
        system=system,
        operator=operator,
        noise_std=o.noise_std,
        cycles=cfg.steps,
        burn_in=cfg.burn_in,
        init=cfg.initial.recipe,
        init_std=cfg.initial.std,
        spinup=cfg.initial.spinup,
        dtype=getattr(torch, cfg.dtype),
        description=f"{cfg.system}, {o.operator} observations, noise std {o.noise_std}",
    )


def _check_checkpoint_system(path: Path, cfg: ExperimentConfig, setup: TwinSetup) -> None:
    from ..emulators.training import checkpoint_system
    from ..systems.datasets import make_system

    name, kwargs = checkpoint_system(path)
    if name is None:
        return  # trained outside `genfilter train`: nothing recorded to compare
    if name != cfg.system:
        raise ConfigError(
            f"config field 'emulator': {path.name} was trained for {name}, but "
            f"the config's system is {cfg.system}"
        )
    try:
        trained = make_system(name, **kwargs)
    except (TypeError, ValueError):
        return
    ours = setup.system
    if tuple(trained.state_shape) != tuple(ours.state_shape) or not math.isclose(
        float(trained.interval), float(ours.interval)
    ):
        raise ConfigError(
            f"config field 'emulator': {path.name} was trained for {name} with state shape "
            f"{tuple(trained.state_shape)} and interval {trained.interval}, but the config's "
            f"system has {tuple(ours.state_shape)} and {ours.interval}"
        )


def build_emulator(cfg: ExperimentConfig, setup: TwinSetup):
    """The forecast model: the shipped emulator, the true system, or a checkpoint trained
    for the config's system (checked against what the checkpoint records)."""
    if cfg.emulator == "true":
        return true_model(setup.system)
    if cfg.emulator == "oracle":
        from ..emulators.oracle import ImportanceSampledEmulator

        return ImportanceSampledEmulator(true_model(setup.system), **cfg.emulator_options)
    from ..emulators.training import load_emulator
    from .l63 import SHIPPED_FAMILIES, load_shipped_emulator, shipped_checkpoint

    family = SHIPPED_FAMILIES.get(cfg.emulator)
    interval = float(setup.system.interval)
    path = (
        Path(cfg.emulator) if family is None else shipped_checkpoint(interval, family, cfg.system)
    )
    _check_checkpoint_system(path, cfg, setup)
    try:
        if family is not None:  # the shipped file with its own sampling defaults
            return load_shipped_emulator(interval, family, cfg.system, **cfg.emulator_options)
        return load_emulator(path, **cfg.emulator_options)
    except (TypeError, ValueError) as exc:
        if cfg.emulator_options and "checkpoint" not in str(exc):
            where = field_of(exc, cfg.emulator_options, "emulator_options")
            raise ConfigError(f"config field {where!r}: {exc}") from None
        raise


def build_filter(cfg: ExperimentConfig, emulator, setup: TwinSetup, generator):
    """The filter of a config with its options (EnSF / EnFF are normalised with the
    system's climatology unless ``mean`` / ``std`` are given; a BPF or FA-APF ``jitter``
    wraps the emulator in :class:`~genfilter.emulators.jittered.Jittered`)."""
    cls = filter_class(cfg.filter.method)
    options = dict(cfg.filter.options)
    if cfg.filter.method in ("ensf", "enff"):
        clim = climatology(setup)
        options.setdefault("mean", clim.mean)
        options.setdefault("std", clim.std)
    if "jitter" in WRAPPER_OPTIONS.get(cfg.filter.method, ()) and "jitter" in options:
        from ..emulators.jittered import Jittered

        try:
            emulator = Jittered(emulator, options.pop("jitter"))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config field 'filter.options.jitter': {exc}") from None
    if "jitter_scale" in WRAPPER_OPTIONS.get(cfg.filter.method, ()) and "jitter_scale" in options:
        from ..emulators.jittered import SpreadJittered

        try:
            emulator = SpreadJittered(
                emulator,
                options.pop("jitter_scale"),
                options.pop("jitter_radius", math.inf),
                shrink=options.pop("jitter_shrink", False),
                adaptive=options.pop("jitter_adaptive", False),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config field 'filter.options.jitter_scale': {exc}") from None
    try:
        return cls(emulator, generator=generator, **options)
    except (TypeError, ValueError) as exc:
        where = field_of(exc, cfg.filter.options, "filter.options")
        raise ConfigError(f"config field {where!r}: {exc}") from None


def run_seed(cfg: ExperimentConfig, run: int) -> tuple[int, int]:
    """``(twin seed, filter seed)`` of run ``run``: the twin depends on the config seed and
    the run only, so every filter of a table sees the same twins."""
    twin_seed = cfg.seed + run
    return twin_seed, 1_000_003 * (twin_seed + 1) + 7919 * cfg.filter.particles + 17


def run_one(
    cfg: ExperimentConfig,
    run: int,
    setup: TwinSetup,
    emulator,
    *,
    progress: bool = False,
    checkpoint: Path | None = None,
    desc: str | None = None,
    device: str | torch.device = "cpu",
) -> FilterRun:
    """Run ``run`` of a config: its twin, a fresh filter, :func:`assimilate`.

    ``device``: where the particles live and the emulator runs (the emulator must already
    be there, see :func:`run_config`); the twin is drawn on the CPU and moved, the filter's
    random numbers come from its CPU generator, and the record returned is on the CPU."""
    twin_seed, filter_seed = run_seed(cfg, run)
    twin = make_twin(setup, twin_seed)
    filt = build_filter(cfg, emulator, setup, make_generator(filter_seed))
    dev = torch.device(device)
    record = assimilate(
        filt,
        twin.initial_ensemble(cfg.filter.particles).to(dev),
        twin.observations,
        truth=twin.truth.to(dev),
        progress=progress,
        checkpoint=checkpoint,
        save_particles=cfg.save == "particles",
        desc=desc or f"{cfg.filter.method} run {run + 1}/{cfg.runs}",
        predictive_check=cfg.predictive_check,
        predictive_seed=filter_seed + 1,
    )
    return record if dev == torch.device("cpu") else _to_cpu(record)


def _to_cpu(record: FilterRun) -> FilterRun:
    """A run record with every tensor on the CPU (what the run file is written from)."""

    def cpu(v):
        if isinstance(v, Tensor):
            return v.cpu()
        if isinstance(v, dict):
            return {k: cpu(x) for k, x in v.items()}
        if isinstance(v, list):
            return [cpu(x) for x in v]
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.replace(
                v, **{f.name: cpu(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
            )
        return v

    return cpu(record)


def run_summary(
    cfg: ExperimentConfig, run: int, setup: TwinSetup | None = None, emulator=None
) -> dict[str, Any]:
    """Run ``run`` of a config without files, summarised: ``skill``, ``spread``, ``ssr``,
    ``crps`` after the burn-in, ``seconds``, ``diverged`` (non-finite scores, an error, or
    skill above the climatological sd) and ``error`` (``None`` or the exception as text:
    a sweep records a failing configuration and goes on)."""
    setup = setup or build_twin_setup(cfg)
    out: dict[str, Any] = {"N": cfg.filter.particles, "seed": run_seed(cfg, run)[0], "error": None}
    t0 = time.perf_counter()
    try:
        em = emulator if emulator is not None else build_emulator(cfg, setup)
        summary = run_one(cfg, run, setup, em).summary(burn_in=cfg.burn_in)
        for key in ("skill", "spread", "ssr", "crps"):
            out[key] = float(summary[key])
    except Exception as exc:
        for key in ("skill", "spread", "ssr", "crps"):
            out[key] = float("nan")
        last = traceback.extract_tb(exc.__traceback__)[-1]
        out["error"] = f"{type(exc).__name__}: {exc} ({last.filename.split('/')[-1]}:{last.lineno})"
    out["seconds"] = time.perf_counter() - t0
    finite = all(math.isfinite(out[k]) for k in ("skill", "spread", "crps"))
    out["diverged"] = bool(
        out["error"] is not None or not finite or out["skill"] > climatology(setup).sd
    )
    return out


def _state_dims(cfg: ExperimentConfig, ndim: int) -> list[str]:
    from ..systems.datasets import SYSTEMS

    dims = list(SYSTEMS[cfg.system].state_dims)
    return dims if len(dims) == ndim else [f"dim_{i}" for i in range(ndim)]


def _check_resume(cfg: ExperimentConfig, out: Path, parts: Path, resume: bool) -> bool:
    """Refuses what a rerun must not silently do; returns whether ``out`` is already the
    finished result of this config."""
    import yaml

    if parts.exists():
        if not resume:
            raise FileExistsError(
                f"{parts} holds an unfinished run of this output; pass --resume to continue "
                "it, or delete the folder to start again"
            )
        saved = parts / "config.yaml"
        if not saved.is_file():
            raise ValueError(
                f"--resume: {parts} has no config.yaml, so it cannot be checked "
                "against this config; delete the folder to start again"
            )
        if parse_config(yaml.safe_load(saved.read_text())) != cfg:
            raise ValueError(
                f"--resume: the config differs from the one of the unfinished run "
                f"in {parts} ({saved}); delete the folder to start again"
            )
        return False
    if resume and out.is_file():
        with open_run(out) as ds:
            stored = ds.attrs.get("config")
        if stored is None or parse_config(yaml.safe_load(stored)) != cfg:
            raise ValueError(
                f"--resume: {out} is already finished, from another config; "
                "choose another --out or delete the file"
            )
        return True
    return False


def _take_lock(parts: Path) -> Path:
    """Creates ``parts/lock`` (PID and host of this process) atomically; refuses when a live
    process, or one on another host, holds it; takes over a lock whose process is gone."""
    lock = parts / "lock"
    host = socket.gethostname()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid_text, owner_host = lock.read_text().split(maxsplit=1)
                pid = int(pid_text)
            except (OSError, ValueError):  # being written this instant, or unreadable
                time.sleep(0.2)
                pid, owner_host = None, ""
            if pid is not None and owner_host.strip() == host and _gone(pid):
                lock.unlink(missing_ok=True)
                continue
            if pid is None:
                continue
            raise ValueError(
                f"{parts} is being written by process {pid} on {owner_host.strip()}; wait for "
                f"it to finish, or delete {lock} if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {host}")
        return lock
    raise ValueError(f"cannot take {lock}: it keeps changing; is another process starting?")


def _gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this host (this process's own PID counts as gone:
    its lock is left from an earlier call that did not finish)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def run_config(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
    label: str | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Runs every run of ``cfg`` and writes ``out`` (netCDF; module docstring); ``label``
    names the filter in reports (default: the method).  With ``resume``, an unfinished
    run continues and a finished one of the same config is returned as it is.

    ``device`` (``cpu``, ``cuda``): where the emulator and the particles live.  The twin and
    the filter's random numbers are drawn on the CPU whatever the device, so a GPU run sees
    the same twins and the same noise as a CPU run; its numbers differ only by the kernels'
    rounding.  The run file records the device (attribute ``device``)."""
    from .._utils import check_device
    from ..distributed import barrier, is_main, world_size

    dev = check_device(device)
    out = check_run_path(out)
    parts = out.with_name(out.name + ".parts")
    done = _check_resume(cfg, out, parts, resume)
    barrier()  # under torchrun: every rank checks before rank 0 creates anything
    if done:
        return out
    main = is_main()

    setup = build_twin_setup(cfg)
    emulator = build_emulator(cfg, setup)
    if dev.type != "cpu" and isinstance(emulator, torch.nn.Module):
        emulator = emulator.to(dev)
    build_filter(cfg, emulator, setup, make_generator(0))  # bad options fail before any file
    fresh = not parts.exists()
    try:
        if main:
            parts.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out} cannot be written: {exc.strerror or exc}") from None
    lock = _take_lock(parts) if main else None  # before anything a failure would remove
    try:
        if main:
            (parts / "config.yaml").write_text(cfg.to_yaml())
        t_start = time.perf_counter()
        runs = [
            run_one(
                cfg,
                r,
                setup,
                emulator,
                progress=progress,
                checkpoint=parts / f"run{r:04d}.pt",
                device=dev,
            )
            for r in range(cfg.runs)
        ]
        if not main:
            barrier()  # wait for rank 0's file
            return out
        twins = [make_twin(setup, run_seed(cfg, r)[0]) for r in range(cfg.runs)]
        ds = run_dataset(
            runs,
            observations=[tw.observations for tw in twins],
            state_dims=_state_dims(cfg, len(setup.state_shape)),
            interval=float(setup.system.interval),
            burn_in=cfg.burn_in,
            twin_seeds=[run_seed(cfg, r)[0] for r in range(cfg.runs)],
            attrs={
                "title": f"genfilter {cfg.filter.method} on {cfg.name}",
                "source": f"genfilter {__version__} (git {git_version()})",
                "history": f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {command or ' '.join(sys.argv)}",
                "config": cfg.to_yaml(),
                "method": cfg.filter.method,
                "label": label or cfg.filter.method,
                "experiment": cfg.name,
                "particles": cfg.filter.particles,
                "noise_std": cfg.observations.noise_std,
                "wall_seconds": time.perf_counter() - t_start,
                "processes": world_size(),
                "device": str(dev),
            },
        )
        ds["observations"].attrs["noise_std"] = cfg.observations.noise_std
        write_run(ds, out)
    except Exception:
        if fresh and main:  # a fresh run that fails leaves nothing that blocks the rerun
            shutil.rmtree(parts, ignore_errors=True)
        elif lock is not None:  # the checkpoints stay for --resume
            lock.unlink(missing_ok=True)
        raise
    except BaseException:  # interrupted (Ctrl-C): the checkpoints stay for --resume
        if lock is not None:
            lock.unlink(missing_ok=True)
        raise
    shutil.rmtree(parts)
    barrier()
    return out
