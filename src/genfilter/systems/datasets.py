r"""Training data for the emulators: trajectories of a simulated system on disk
(docs/systems.md; docs/method.md#test-systems).

A dataset is ``trajectories`` independent runs of one system, each started on the attractor
(``burn_in`` time units from the system's initial distribution) and kept for ``length``
snapshots :math:`x^0, \dots, x^{L-1}`, one snapshot interval apart.  It is split *by
trajectory* into train / valid / test (80 / 10 / 10 % by default, after a seeded
permutation), written as netCDF, and summarised by normalisation statistics of the train
split (``stats.json``).

Reproducibility (bit for bit on the same machine, also after resume).  Trajectory ``i`` is driven by
its own ``torch.Generator`` seeded from ``(seed, i)`` (``numpy.random.SeedSequence(seed,
spawn_key=(0, i))``): its initial state, its burn-in noise and its kept noise are drawn
from that stream only, one interval at a time, and the batch is integrated only after the
noise of every member has been drawn.  A trajectory therefore does not depend on which
other trajectories share its chunk, on the chunk size (``DatasetSpec.chunk``), on the order
in which chunks are computed or on a restart; the first ``n`` trajectories of a larger
dataset are the ``n`` trajectories of a smaller one with the same seed.  The split
permutation comes from ``SeedSequence(seed, spawn_key=(1,))``.

Files in ``out_dir``::

    chunks/chunk_0000.nc ...   finished chunks (each written atomically; the resume points)
    train.nc valid.nc test.nc  variable ``state`` (trajectory, time, *state dims)
    stats.json                 train-split statistics of states and residuals

``generate_dataset`` is resumable (only the missing chunks are computed) and cached (a
finished dataset with the same spec is returned at once).
"""

from __future__ import annotations

__all__ = [
    "SPLITS",
    "SYSTEMS",
    "DatasetSpec",
    "SystemEntry",
    "consecutive_pairs",
    "describe",
    "generate_dataset",
    "load_split",
    "load_stats",
    "make_system",
]

import inspect
import json
import math
import numbers
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import StochasticSystem, check_count
from .linear_gaussian import LinearGaussian
from .lorenz63 import StochasticLorenz63
from .lorenz96 import Lorenz96
from .navier_stokes import NavierStokes2D

SPLITS = ("train", "valid", "test")

# namespaces of SeedSequence spawn keys: (0, i) trajectory i, (1,) the split permutation
_TRAJECTORY_KEY, _SPLIT_KEY = 0, 1


# ------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class SystemEntry:
    """A registered system: its class, default constructor arguments, the names of its state
    axes and the default dataset size.  Calling the entry builds the system."""

    cls: type[StochasticSystem]
    kwargs: Mapping[str, Any]
    state_dims: tuple[str, ...]
    trajectories: int
    length: int
    burn_in: float
    chunk: int
    note: str = ""
    training: Mapping[str, Any] = field(default_factory=dict)
    """Defaults of ``genfilter train``: the denoiser backbone ``kind`` (``mlp`` | ``unet``),
    whether the emulator models the ``residual`` x^{k+1} - x^k, the normalisation ``stats``
    and the backbone keywords ``net``."""

    def __call__(self, **overrides: Any) -> StochasticSystem:
        return self.cls(**{**self.kwargs, **overrides})

    def constructor_defaults(self) -> dict[str, Any]:
        """Every keyword of the constructor with its default, the registry's defaults on top."""
        params = inspect.signature(self.cls).parameters
        out = {
            name: p.default
            for name, p in params.items()
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        out.update(self.kwargs)
        return out


SYSTEMS: dict[str, SystemEntry] = {
    # genfilter's default: 1024 trajectories x 1024 snapshots (every 0.1) after a burn-in
    "lorenz63": SystemEntry(
        StochasticLorenz63,
        {},
        ("component",),
        trajectories=1024,
        length=1024,
        burn_in=10.0,
        chunk=512,
        note="genfilter's default",
        training=dict(
            kind="mlp", residual=False, stats="per_component", net=dict(hidden=128, layers=6)
        ),
    ),
    "lorenz96": SystemEntry(
        Lorenz96,
        {},
        ("component",),
        trajectories=256,
        length=1024,
        burn_in=20.0,
        chunk=64,
        training=dict(
            kind="mlp", residual=False, stats="per_component", net=dict(hidden=256, layers=6)
        ),
    ),
    # The paper's NS data are ~1000 trajectories at 128² (Chen et al. 2024); 64 x 100
    # snapshots at 64² (50 time units each) is what one CPU core makes in ~5 minutes.
    "ns2d": SystemEntry(
        NavierStokes2D,
        {"resolution": 64},
        ("x", "y"),
        trajectories=64,
        length=100,
        burn_in=50.0,
        chunk=16,
        note="smaller than the paper's data (CPU budget)",
        # residual on for fields (GenCast's habit), off for the Lorenz systems
        training=dict(kind="unet", residual=True, stats="scalar", net=dict()),
    ),
    # the exactly solvable reference (Kalman filter); a dataset of it is seldom needed
    "linear-gaussian": SystemEntry(
        LinearGaussian,
        {},
        ("component",),
        trajectories=64,
        length=256,
        burn_in=10.0,
        chunk=64,
        training=dict(
            kind="mlp", residual=False, stats="per_component", net=dict(hidden=128, layers=4)
        ),
    ),
}


def make_system(name: str, **overrides: Any) -> StochasticSystem:
    """The registered system ``name`` built with its default arguments, ``overrides`` on top.

    >>> make_system("ns2d", resolution=32)
    NavierStokes2D(resolution=32, ...)
    """
    return _entry(name, "name")(**overrides)


def _entry(name: Any, field_name: str = "system") -> SystemEntry:
    if not isinstance(name, str) or name not in SYSTEMS:
        raise ValueError(
            f"{field_name} must be one of {', '.join(repr(k) for k in SYSTEMS)}, got {name!r}"
        )
    return SYSTEMS[name]


# ------------------------------------------------------------------------------ spec


@dataclass(frozen=True)
class DatasetSpec:
    r"""What a dataset is: everything its numbers depend on, plus the compute plan ``chunk``.

    Arguments:
        system: registry name (:data:`SYSTEMS`): ``"lorenz63"``, ``"lorenz96"``, ``"ns2d"``.
        system_kwargs: constructor arguments over the registry defaults; stored resolved
            (every constructor argument with its value), so the files say e.g. ``epsilon``.
        trajectories: number of independent trajectories (default per system).
        length: snapshots kept per trajectory, :math:`x^0 \dots x^{L-1}` (at least 2).
        burn_in: time units run from the system's initial distribution before :math:`x^0`
            (rounded up to whole snapshot intervals, as ``attractor_states`` does).
        seed: non-negative integer; trajectory ``i`` uses the stream ``(seed, i)``.
        split: fractions (train, valid, test), non-negative, summing to 1; by trajectory.
        chunk: trajectories integrated together (memory, progress and resume granularity);
            the data do not depend on it.

    Defaults (``None`` = per system): lorenz63 1024 × 1024 snapshots, burn-in 10, chunk 512
    (genfilter's default); lorenz96 256 × 1024, burn-in 20, chunk 64; ns2d (64², ``resolution=64``)
    64 × 100 (50 time units each), burn-in 50, chunk 16 — far smaller than the paper's data (~1000
    trajectories at 128², Chen et al. 2024) because of the CPU budget: one core needs ~25 ms per
    field and snapshot interval (500 internal steps) at 64², so the default set already takes ~5
    minutes (docs/systems.md, Data generation).
    """

    system: str
    system_kwargs: Mapping[str, Any] = field(default_factory=dict)
    trajectories: int | None = None
    length: int | None = None
    burn_in: float | None = None
    seed: int = 0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    chunk: int | None = None

    def __post_init__(self) -> None:
        entry = _entry(self.system)

        def set_(name, value):
            return object.__setattr__(self, name, value)

        set_("system_kwargs", _resolve_kwargs(entry, self.system, self.system_kwargs))
        set_(
            "trajectories",
            _count(
                entry.trajectories if self.trajectories is None else self.trajectories,
                "trajectories",
                1,
            ),
        )
        set_("length", _count(entry.length if self.length is None else self.length, "length", 2))
        burn_in = entry.burn_in if self.burn_in is None else self.burn_in
        if isinstance(burn_in, bool) or not isinstance(burn_in, numbers.Real):
            raise ValueError(f"burn_in must be a number of time units >= 0, got {burn_in!r}")
        if not math.isfinite(burn_in) or burn_in < 0:
            raise ValueError(f"burn_in must be a finite number >= 0, got {burn_in!r}")
        set_("burn_in", float(burn_in))
        seed = _count(self.seed, "seed", 0)
        if seed >= 2**63:
            raise ValueError(f"seed must be < 2**63, got {seed}")
        set_("seed", seed)
        set_("split", _check_split(self.split))
        set_("chunk", _count(entry.chunk if self.chunk is None else self.chunk, "chunk", 1))
        sizes = self.split_sizes()
        for name, fraction, size in zip(SPLITS, self.split, sizes):
            if fraction > 0 and size == 0:
                raise ValueError(
                    f"trajectories = {self.trajectories} is too few for split {self.split}: "
                    f"the {name} split would be empty (fraction {fraction})"
                )

    # -- derived ------------------------------------------------------------------------

    def make_system(self) -> StochasticSystem:
        """The system these data come from."""
        return _entry(self.system)(**self.system_kwargs)

    def split_sizes(self) -> tuple[int, int, int]:
        """Trajectories per split: valid and test rounded, train takes the rest."""
        n = self.trajectories
        n_valid = round(self.split[1] * n)
        n_test = round(self.split[2] * n)
        return n - n_valid - n_test, n_valid, n_test

    def chunk_slices(self) -> list[slice]:
        """Trajectory ranges of the chunks, in order."""
        n, c = self.trajectories, self.chunk
        return [slice(s, min(s + c, n)) for s in range(0, n, c)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what the files store)."""
        d = asdict(self)
        d["system_kwargs"] = dict(self.system_kwargs)
        d["split"] = list(self.split)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetSpec:
        d = dict(d)
        if "split" in d:
            d["split"] = tuple(d["split"])
        return cls(**d)


_count = check_count  # the same validation as the systems' counts


def _check_split(split: Any) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        values = ()
    if (
        len(values) != 3
        or any(isinstance(f, bool) for f in split)
        or not all(math.isfinite(f) and f >= 0 for f in values)
        or abs(sum(values) - 1.0) > 1e-6
        or values[0] <= 0
    ):
        raise ValueError(
            "split must be three fractions (train, valid, test) >= 0 summing to 1 with "
            f"train > 0, got {split!r}"
        )
    return values


def _resolve_kwargs(entry: SystemEntry, system: str, given: Any) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise ValueError(f"system_kwargs must be a dict, got {given!r}")
    resolved = entry.constructor_defaults()
    unknown = [k for k in given if k not in resolved]
    if unknown:
        raise ValueError(
            f"system_kwargs: unknown argument(s) {unknown} for {system!r} "
            f"({entry.cls.__name__}); valid: {', '.join(resolved)}"
        )
    for key, value in given.items():
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)  # numpy scalars -> JSON-able Python numbers
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, (bool, str, type(None))):
            raise ValueError(
                f"system_kwargs[{key!r}] must be a number, string, bool or None (stored as "
                f"JSON), got {value!r}"
            )
        resolved[key] = value
    try:
        entry.cls(**resolved)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"system_kwargs {dict(given)!r} rejected by {entry.cls.__name__}: {err}"
        ) from err
    return resolved


# ------------------------------------------------------------------------------ integration


def _trajectory_generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence(seed, spawn_key=(_TRAJECTORY_KEY, index)).generate_state(
        1, np.uint64
    )
    return torch.Generator().manual_seed(int(state[0]))


def _split_indices(spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Trajectory indices of each split (sorted within a split)."""
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(spec.seed, spawn_key=(_SPLIT_KEY,)))
    )
    perm = rng.permutation(spec.trajectories)
    n_train, n_valid, _ = spec.split_sizes()
    bounds = (0, n_train, n_train + n_valid, spec.trajectories)
    return {name: np.sort(perm[bounds[i] : bounds[i + 1]]) for i, name in enumerate(SPLITS)}


def _step_each(system: StochasticSystem, x: Tensor, generators: list[torch.Generator]) -> Tensor:
    """One snapshot interval; member ``b`` draws its noise from ``generators[b]``."""
    noises = [system.draw_noise(1, generator=g, dtype=x.dtype) for g in generators]
    noise = None if noises[0] is None else torch.cat(noises)
    return system.advance(x, noise)


def _integrate_chunk(
    spec: DatasetSpec, indices: range, tick: Callable[[], None] | None = None
) -> np.ndarray:
    """Trajectories ``indices`` of the dataset, ``(n, length, *S)`` float32.

    Initial states from the system's ``attractor_states(1, g_i, burn_in=0)`` (its initial
    distribution), then ``ceil(burn_in / interval)`` intervals of burn-in and ``length - 1``
    kept intervals — the law of ``attractor_states(n, burn_in=...)`` followed by
    ``trajectory``, with one noise stream per trajectory.  ``tick`` is called per interval.
    """
    system = spec.make_system()
    generators = [_trajectory_generator(spec.seed, i) for i in indices]
    n_burn = math.ceil(spec.burn_in / system.interval - 1e-9)
    with torch.no_grad():
        x = torch.cat(
            [system.attractor_states(1, g, burn_in=0.0, dtype=torch.float32) for g in generators]
        )
        out = x.new_empty((len(generators), spec.length, *system.state_shape))
        for k in range(n_burn + spec.length - 1):
            if k >= n_burn:
                out[:, k - n_burn] = x
            x = _step_each(system, x, generators)
            if tick is not None:
                tick()
        out[:, -1] = x
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).flatten(1).any(1).nonzero().flatten()
        raise FloatingPointError(
            f"{spec.system}: trajectories {[indices[int(b)] for b in bad[:5]]} became non-finite "
            f"(an unstable time step? system_kwargs = {dict(spec.system_kwargs)})"
        )
    return out.numpy()


# ------------------------------------------------------------------------------ files


def _state_coords(entry: SystemEntry, system: StochasticSystem) -> dict[str, np.ndarray]:
    shape = tuple(system.state_shape)
    coords: dict[str, np.ndarray] = {}
    if entry.state_dims == ("x", "y"):
        for dim, n in zip(entry.state_dims, shape):
            coords[dim] = np.arange(n) * (2 * math.pi / n)
    else:
        for dim, n in zip(entry.state_dims, shape):
            coords[dim] = np.arange(n)
    return coords


def _to_dataset(spec: DatasetSpec, state: np.ndarray, trajectories: np.ndarray, attrs: dict):
    import xarray as xr

    entry = SYSTEMS[spec.system]
    system = spec.make_system()
    time = np.arange(spec.length) * system.interval
    n_burn = math.ceil(spec.burn_in / system.interval - 1e-9)
    ds = xr.Dataset(
        {"state": (("trajectory", "time", *entry.state_dims), state)},
        coords={
            "trajectory": ("trajectory", np.asarray(trajectories, dtype=np.int64)),
            "time": ("time", time),
            **{k: (k, v) for k, v in _state_coords(entry, system).items()},
        },
    )
    ds["time"].attrs.update(
        units="model time units",
        long_name=f"time since the end of the burn-in ({n_burn * system.interval:g} time units)",
    )
    ds["trajectory"].attrs["long_name"] = "index of the trajectory in the dataset (its seed stream)"
    ds["state"].attrs["long_name"] = f"{type(system).__name__} state"
    from .._version import __version__

    ds.attrs.update(
        system=spec.system,
        system_class=type(system).__name__,
        system_repr=repr(system),
        system_kwargs=json.dumps(dict(spec.system_kwargs), sort_keys=True),
        spec=spec.to_json(),
        seed=spec.seed,
        interval=system.interval,
        burn_in=n_burn * system.interval,
        genfilter_version=__version__,
        **attrs,
    )
    return ds


def _write_atomic(ds, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    ds.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, path)


def _read_attrs(path: Path) -> dict[str, Any]:
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return dict(ds.attrs)


def _stored_spec(path: Path) -> dict[str, Any]:
    return json.loads(_read_attrs(path)["spec"])


def _without_chunk(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "chunk"}


def _mismatch(where: Path, stored: Mapping[str, Any], spec: DatasetSpec) -> ValueError:
    wanted = spec.to_dict()
    keys = [k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    diff = "; ".join(f"{k}: stored {stored.get(k)!r}, asked {wanted.get(k)!r}" for k in keys)
    hint = (
        f" (chunk only changes the compute plan: rerun with chunk={stored.get('chunk')} to resume)"
        if keys == ["chunk"]
        else ""
    )
    return ValueError(
        f"{where} belongs to a dataset with another spec ({diff}); use a new out_dir, or "
        f"overwrite=True (--overwrite) to replace it{hint}"
    )


def _merged_paths(out: Path) -> list[Path]:
    return [out / f"{name}.nc" for name in SPLITS] + [out / "stats.json"]


def _remove_outputs(out: Path) -> None:
    """Deletes only the files generate_dataset writes."""
    for path in _merged_paths(out):
        path.unlink(missing_ok=True)
    if (out / "chunks").is_dir():
        for path in (out / "chunks").glob("chunk_*.nc*"):
            path.unlink()


def _finished(out: Path, spec: DatasetSpec) -> bool:
    """True when the merged files exist for the same data (the chunk plan aside); raises if
    any of them belongs to another dataset."""
    wanted = _without_chunk(spec.to_dict())
    present = 0
    for path in _merged_paths(out):
        if not path.exists():
            continue
        present += 1
        stored = (
            json.loads(path.read_text())["spec"] if path.suffix == ".json" else _stored_spec(path)
        )
        if _without_chunk(stored) != wanted:
            raise _mismatch(path, stored, spec)
    return present == len(_merged_paths(out))


# ------------------------------------------------------------------------------ statistics


def _moments(
    x: np.ndarray, axes: tuple[int, ...], block: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof 0) over ``axes`` of ``x`` (trajectories first), in float64, two
    passes over blocks of trajectories (memory O(block))."""
    count = np.prod([x.shape[a] for a in axes])
    total = sum(
        x[i : i + block].astype(np.float64).sum(axis=axes) for i in range(0, x.shape[0], block)
    )
    mean = total / count
    keep = [1 if a in axes else n for a, n in enumerate(x.shape)]
    m = mean.reshape(keep)
    sq = sum(
        np.square(x[i : i + block].astype(np.float64) - m).sum(axis=axes)
        for i in range(0, x.shape[0], block)
    )
    return mean, np.sqrt(sq / count)


def _residuals(x: np.ndarray) -> np.ndarray:
    return x[:, 1:].astype(np.float64) - x[:, :-1].astype(np.float64)


def _statistics(train: np.ndarray, spec: DatasetSpec) -> dict[str, Any]:
    r"""State and residual :math:`x^{k+1} - x^k` mean / std of the train split, per component
    (reduced over trajectories and time) and scalar (over everything)."""
    per_component = (0, 1)
    scalar = tuple(range(train.ndim))
    out: dict[str, Any] = {
        "split": "train",
        "trajectories": int(train.shape[0]),
        "snapshots_per_trajectory": int(train.shape[1]),
        "state_shape": list(train.shape[2:]),
        "state_dims": list(SYSTEMS[spec.system].state_dims),
        "ddof": 0,
    }
    for name, data in (("state", train), ("residual", _residuals(train))):
        m, s = _moments(data, per_component)
        ms, ss = _moments(data, scalar)
        out[name] = {
            "count": int(data.shape[0] * data.shape[1]),
            "per_component": {"mean": m.tolist(), "std": s.tolist()},
            "scalar": {"mean": float(ms), "std": float(ss)},
        }
    out["spec"] = spec.to_dict()
    return out


# ------------------------------------------------------------------------------ public API


def generate_dataset(
    spec: DatasetSpec,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    resume: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generates (or finds) the dataset ``spec`` in ``out_dir``; returns ``out_dir``.

    Trajectories are integrated ``spec.chunk`` at a time; each finished chunk is written
    atomically to ``out_dir/chunks/chunk_0000.nc, chunk_0001.nc, ...`` (with the spec in its attributes), then the
    chunks are merged into ``train.nc``, ``valid.nc``, ``test.nc`` and ``stats.json`` (train
    statistics).  See the module docstring for the layout and the seeding.

    Arguments:
        spec: what to generate.
        out_dir: folder (created if needed).
        progress: tqdm bar over the intervals of the missing chunks.
        resume: reuse finished chunks and a finished dataset with the same spec (``False``:
            recompute everything, replacing those files).
        overwrite: delete what a generation with *another* spec left in ``out_dir`` first
            (otherwise that is an error).
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"spec must be a DatasetSpec, got {type(spec).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a folder")
    if overwrite:
        _remove_outputs(out)
    if _finished(out, spec) and resume:
        return out
    chunk_dir = out / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    for stale in chunk_dir.glob("chunk_*.nc.tmp"):
        stale.unlink()

    slices = spec.chunk_slices()
    paths = [chunk_dir / f"chunk_{i:04d}.nc" for i in range(len(slices))]
    index_of = {path.name: i for i, path in enumerate(paths)}
    wanted = spec.to_dict()
    done: set[int] = set()
    for path in sorted(chunk_dir.glob("chunk_*.nc")):
        try:
            stored = _stored_spec(path)
        except (OSError, KeyError, ValueError) as err:  # unreadable (atomic writes: rare): redo
            warnings.warn(
                f"ignoring unreadable chunk {path} ({err}); it will be recomputed", stacklevel=2
            )
            path.unlink()
            continue
        if stored != wanted:
            raise _mismatch(path, stored, spec)
        if resume and path.name in index_of:
            done.add(index_of[path.name])
    missing = [i for i in range(len(slices)) if i not in done]

    system = spec.make_system()
    intervals = math.ceil(spec.burn_in / system.interval - 1e-9) + spec.length - 1
    bar = None
    if progress and missing:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(missing) * intervals,
            desc=f"{spec.system} data ({len(missing)}/{len(slices)} chunks to do)",
            unit="interval",
        )
    try:
        for i in missing:
            sl = slices[i]
            if bar is not None:
                bar.set_postfix(chunk=f"{i + 1}/{len(slices)}")
            state = _integrate_chunk(
                spec, range(sl.start, sl.stop), None if bar is None else lambda: bar.update(1)
            )
            ds = _to_dataset(
                spec,
                state,
                np.arange(sl.start, sl.stop),
                {"chunk_index": i, "chunk_count": len(slices)},
            )
            _write_atomic(ds, paths[i])
    finally:
        if bar is not None:
            bar.close()
    _merge(spec, out, paths)
    return out


def _merge(spec: DatasetSpec, out: Path, paths: list[Path]) -> None:
    import xarray as xr

    system = spec.make_system()
    splits = _split_indices(spec)
    where = {}  # trajectory -> (split, row)
    for name, idx in splits.items():
        for row, t in enumerate(idx):
            where[int(t)] = (name, row)
    arrays = {
        name: np.empty((len(idx), spec.length, *system.state_shape), dtype=np.float32)
        for name, idx in splits.items()
    }
    for path in paths:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            state = ds["state"].values
            trajectories = ds["trajectory"].values
        for t, x in zip(trajectories, state):
            name, row = where[int(t)]
            arrays[name][row] = x

    stats = _statistics(arrays["train"], spec)
    tmp = out / "stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=1))
    os.replace(tmp, out / "stats.json")
    provenance = {
        "command": shlex.join(sys.argv) if sys.argv else "",
        "call": f"genfilter.systems.datasets.generate_dataset({spec!r}, {str(out)!r})",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for name, idx in splits.items():
        ds = _to_dataset(spec, arrays[name], idx, {"split": name, **provenance})
        _write_atomic(ds, out / f"{name}.nc")


def load_split(out_dir: str | os.PathLike, split: str = "train"):
    """The split ``"train"``, ``"valid"`` or ``"test"`` of a generated dataset as an
    ``xarray.Dataset`` loaded in memory (``state``: ``(trajectory, time, *state dims)``)."""
    import xarray as xr

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(out_dir) / f"{split}.nc"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: generate the dataset first (generate_dataset(spec, "
            f"{str(out_dir)!r}))"
        )
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def load_stats(out_dir: str | os.PathLike) -> dict[str, Any]:
    """``stats.json`` of a generated dataset (train-split statistics, see
    :func:`generate_dataset`)."""
    path = Path(out_dir) / "stats.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: generate the dataset first")
    return json.loads(path.read_text())


def consecutive_pairs(ds, lag: int = 1) -> tuple[Tensor, Tensor]:
    r"""All pairs :math:`(x^k, x^{k+\ell})` within each trajectory, :math:`\ell` = ``lag``.

    ``ds``: a dataset from :func:`load_split` (or its ``state`` DataArray), ``(T, L, *S)``.
    Returns ``x_prev, x_next``, each ``(P, *S)`` with ``P = T (L - lag)``, ordered trajectory
    by trajectory, then in time: pair ``p = t (L - lag) + k`` is ``(x_t^k, x_t^{k+lag})``.
    """
    state = ds["state"] if hasattr(ds, "data_vars") else ds
    dims = getattr(state, "dims", ())
    if tuple(dims[:2]) != ("trajectory", "time"):
        raise ValueError(f"ds must have a state with dims (trajectory, time, ...), got {dims}")
    length = state.shape[1]
    lag = _count(lag, "lag", 1)
    if lag >= length:
        raise ValueError(f"lag must be < the trajectory length {length}, got {lag}")
    values = np.asarray(state.values)
    shape = values.shape[2:]
    prev = np.ascontiguousarray(values[:, :-lag]).reshape(-1, *shape)
    nxt = np.ascontiguousarray(values[:, lag:]).reshape(-1, *shape)
    return torch.from_numpy(prev), torch.from_numpy(nxt)


def describe(out_dir: str | os.PathLike) -> str:
    """A short text summary of a generated dataset (what ``genfilter data`` prints)."""
    out = Path(out_dir)
    stats = load_stats(out)
    spec = DatasetSpec.from_dict(stats["spec"])
    system = spec.make_system()
    attrs = _read_attrs(out / "train.nc")
    span = (spec.length - 1) * system.interval
    lines = [
        (
            f"{spec.system} dataset in {out} (genfilter {attrs.get('genfilter_version')}, "
            f"seed {spec.seed}, created {attrs.get('created')})"
        ),
        f"  system: {system!r}",
        (
            f"  {spec.trajectories} trajectories x {spec.length} snapshots every "
            f"{system.interval:g} time units (time 0 .. {span:g}), "
            f"after a burn-in of {attrs.get('burn_in'):g}"
        ),
    ]
    import xarray as xr

    for name in SPLITS:
        path = out / f"{name}.nc"
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            dims = ", ".join(f"{d}={n}" for d, n in ds["state"].sizes.items())
            lines.append(f"  {name + ':':7s}{path.name:10s} state ({dims})")

    def fmt(v) -> str:
        a = np.asarray(v, dtype=float)
        if a.size <= 8:
            return "[" + ", ".join(f"{x:.4g}" for x in a.ravel()) + "]"
        return f"{a.min():.4g} .. {a.max():.4g} over {a.size} components"

    lines.append("  train statistics (ddof 0):")
    for name in ("state", "residual"):
        s = stats[name]
        lines.append(
            f"    {name:8s} scalar mean {s['scalar']['mean']:.4g} std {s['scalar']['std']:.4g};"
            f" per component mean {fmt(s['per_component']['mean'])}"
            f" std {fmt(s['per_component']['std'])}"
        )
    return "\n".join(lines)
