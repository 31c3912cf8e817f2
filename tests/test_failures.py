"""Bad input and faults end in one clear line and leave nothing behind.

Every case below is a bad input or a fault that a user can meet through the command line
(``kind="cli"``) or the Python API (``kind="api"``).  A case's ``setup(tmp_path)`` writes
what it needs into ``tmp_path`` (corrupt files, configs...) and returns the action: the
argv of ``genfilter`` or a zero-argument callable.  :func:`run_case` runs it and classifies
the outcome:

- ``clear``: CLI: exit code 2, exactly one non-empty line on stderr that contains every
  needle, no escaped exception, nothing new left under ``tmp_path``.  API: a
  ``ValueError`` / ``TypeError`` / ``FloatingPointError`` / ``FileNotFoundError`` (or
  subclass) whose one-line message contains every needle.  For the cases whose correct
  behaviour is a warning (weight collapse): the run finishes, warns the expected number of
  times (``UserWarning`` naming the step) and records the collapse in its result / file.
- ``traceback``: an exception escaped (CLI: not a clean exit, so a traceback is printed;
  API: an exception of another type, e.g. ``RuntimeError``, ``KeyError``, an unpickling
  or HDF5 error, i.e. an internal failure rather than a message about the input).
- ``unclear``: it failed, but the message lacks a needle, has several lines, the exit code
  is not 2, or files were left behind (``*.parts`` folders, empty ``*_report`` folders,
  ``.tmp`` files, partial outputs).
- ``silent``: no error (nor the expected warning) at all: the run "succeeded" with a wrong
  or degraded result.

Needles are case-insensitive substrings; a tuple of strings means "any of them"; a
compiled regular expression must match (used for step numbers, which may be counted from
0 as in :func:`genfilter.assimilate` or from 1 as the netCDF ``step`` coordinate).

``benchmarks/failure_probe.py`` imports :data:`CASES` and :func:`run_case` from this file
(by path, without pytest) and prints the counts per class.  Keep the module fast: tiny runs
(3 steps, 1 run, 4-8 particles, 4 sampler steps) and shared artefacts (a tiny dataset and
one finished run) made once per session.
"""

from __future__ import annotations

import argparse
import inspect
import os
import pickle
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

try:  # the probe imports this module without pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

# --------------------------------------------------------------------------- the harness

ACCEPTED_API_ERRORS = (ValueError, TypeError, FloatingPointError, FileNotFoundError)
STATUSES = ("clear", "traceback", "unclear", "silent")
# Warning categories Python does not print by default (outside __main__).
HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@dataclass(frozen=True)
class Case:
    """One bad input or fault (module docstring).

    Attributes:
        id: Unique, used as the pytest id.
        cls: The class of fault ("checkpoint", "config types", ...).
        kind: ``"cli"`` or ``"api"``.
        setup: ``setup(tmp_path) -> argv | callable``.
        needles: What the message must contain (module docstring).
        expect: ``"error"`` (default) or ``"warning"`` (weight collapse: the run goes on).
        warnings_expected: For ``expect="warning"``: how many matching warnings.
        recorded: For ``expect="warning"``: ``recorded(result, tmp_path) -> bool`` checks
            that the collapse is recorded (API: the returned value; CLI: ``None``).
        allowed: For ``expect="warning"``: names (relative to tmp_path) that may be created.
        note: Why the case is here / what is unsure.
    """

    id: str
    cls: str
    kind: str
    setup: Callable[[Path], Any]
    needles: tuple = ()
    expect: str = "error"
    warnings_expected: int = 1
    recorded: Callable[[Any, Path], bool] | None = None
    allowed: tuple[str, ...] = ()
    note: str = ""


@dataclass
class Outcome:
    """What happened when a case ran, and its class (module docstring)."""

    case: str
    cls: str
    kind: str
    status: str = "unclear"
    exit_code: int | None = None
    message: str = ""
    stdout: str = ""
    exception: str | None = None
    warnings: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    printed_warnings: list[str] = field(default_factory=list)

    @property
    def first_line(self) -> str:
        """The first line of the message; for an escaped exception, the exception's."""
        if self.status == "traceback" and self.exception:
            return self.exception.splitlines()[0]
        for line in self.message.splitlines():
            if line.strip():
                return line.strip()
        return self.warnings[0].splitlines()[0] if self.warnings else ""

    def describe(self) -> str:
        parts = [f"[{self.status}] {self.case} ({self.cls}, {self.kind})"]
        if self.exit_code is not None:
            parts.append(f"exit code: {self.exit_code}")
        if self.exception:
            parts.append(f"exception: {self.exception}")
        if self.reasons:
            parts.append("why: " + "; ".join(self.reasons))
        parts.append("message:\n" + (self.message.rstrip() or "<none>"))
        if self.warnings:
            parts.append("warnings:\n" + "\n".join(self.warnings))
        if self.leftovers:
            parts.append("left behind: " + ", ".join(self.leftovers))
        if self.stdout.strip():
            parts.append("stdout (last lines):\n" + "\n".join(self.stdout.splitlines()[-5:]))
        return "\n".join(parts)


def _needle_text(n) -> str:
    if isinstance(n, re.Pattern):
        return f"/{n.pattern}/"
    if isinstance(n, tuple):
        return " or ".join(repr(x) for x in n)
    return repr(n)


def _has(text: str, n) -> bool:
    if isinstance(n, re.Pattern):
        return n.search(text) is not None
    if isinstance(n, tuple):
        return any(_has(text, x) for x in n)
    return n.lower() in text.lower()


def _missing(text: str, needles: Sequence) -> list[str]:
    return [_needle_text(n) for n in needles if not _has(text, n)]


def step_re(*numbers: int) -> re.Pattern:
    """A step number in a message: ``step 2``, ``step=2``, ``step k = 3``... ``numbers``
    lists the accepted numbers (0-based and 1-based counting of the same step)."""
    alt = "|".join(str(n) for n in numbers)
    return re.compile(rf"\bstep\b[^0-9\n]{{0,12}}\b(?:{alt})\b", re.IGNORECASE)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _leftovers(before: set[str], after: set[str], allowed: Sequence[str] = ()) -> list[str]:
    new = sorted(after - before)
    out: list[str] = []
    for p in new:
        if any(p == a or p.startswith(a + "/") for a in allowed):
            continue
        if any(p.startswith(q + "/") for q in out):  # inside a folder already reported
            continue
        out.append(p)
    return out


def _runner():
    from typer.testing import CliRunner

    # click < 8.2 mixes stderr into stdout unless mix_stderr=False; 8.2+ (and typer's
    # vendored click) always keeps result.stderr apart and has no such argument.
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def _stderr(result) -> str:
    try:
        return result.stderr or ""
    except ValueError:  # old click with mixed streams
        return ""


def _nonempty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _run_cli(case: Case, argv: Sequence, tmp_path: Path, out: Outcome):
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                from genfilter.cli import app
            except Exception as exc:
                out.exception = f"{type(exc).__name__}: {exc}"
                out.message = f"import genfilter.cli failed: {type(exc).__name__}: {exc}"
                out.status = "traceback"
                out.reasons.append("genfilter.cli does not import")
                return None
            result = _runner().invoke(app, [str(a) for a in argv])
    finally:
        os.chdir(old)
    out.exit_code = result.exit_code
    out.stdout = result.stdout or ""
    out.message = _stderr(result)
    out.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    # Warnings Python prints by default would add lines to a real terminal's stderr (the
    # harness records them instead).
    out.printed_warnings = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, HIDDEN_BY_DEFAULT)
    ]
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback

        out.exception = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        out.message = (out.message + "\n" + tb).strip()
    return [w for w in caught]


def _run_api(case: Case, action: Callable[[], Any], out: Outcome):
    value = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = action()
        except Exception as exc:
            out.exception = f"{type(exc).__name__}: {exc}"
            out.message = str(exc)
            out._exc = exc  # type: ignore[attr-defined]
    out.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    return value, list(caught)


def _matching_warnings(caught, needles, category=UserWarning) -> list[str]:
    """Messages of the warnings of ``category`` (or a subclass) that contain every needle."""
    msgs = []
    for w in caught:
        if issubclass(w.category, category) and not _missing(str(w.message), needles):
            msgs.append(str(w.message))
    return msgs


def _wrong_category(caught, needles) -> list[str]:
    """Categories of the warnings that contain every needle but are no UserWarning."""
    return sorted(
        {
            w.category.__name__
            for w in caught
            if not issubclass(w.category, UserWarning) and not _missing(str(w.message), needles)
        }
    )


def run_case(case: Case, tmp_path: Path) -> Outcome:
    """Sets the case up in ``tmp_path``, runs it and classifies the outcome."""
    tmp_path = Path(tmp_path)
    out = Outcome(case.id, case.cls, case.kind)
    try:
        action = case.setup(tmp_path)
    except Exception as exc:
        import traceback

        out.status = "setup-error"
        out.exception = f"{type(exc).__name__}: {exc}"
        out.message = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        out.reasons.append("the case could not be set up")
        return out
    before = _tree(tmp_path)
    t0 = time.perf_counter()
    if case.kind == "cli":
        caught = _run_cli(case, action, tmp_path, out)
        value = None
    else:
        value, caught = _run_api(case, action, out)
    out.seconds = time.perf_counter() - t0
    out.leftovers = _leftovers(
        before, _tree(tmp_path), case.allowed if case.expect == "warning" else ()
    )
    if out.status == "traceback":  # genfilter.cli did not import
        return out
    if case.expect == "warning":
        _classify_warning(case, out, caught or [], value, tmp_path)
    elif case.kind == "cli":
        _classify_cli(case, out)
    else:
        _classify_api(case, out)
    return out


def _classify_cli(case: Case, out: Outcome) -> None:
    if out.exception is not None:
        out.status = "traceback"
        out.reasons.append(f"exception escaped: {out.exception.split(':')[0]}")
        return
    if out.exit_code == 0:
        out.status = "silent"
        out.reasons.append("exit code 0: no error")
        return
    lines = _nonempty_lines(out.message)
    if out.exit_code != 2:
        out.reasons.append(f"exit code {out.exit_code}, not 2")
    if len(lines) != 1:
        out.reasons.append(f"{len(lines)} non-empty lines on stderr, not 1")
    if out.printed_warnings:
        first = out.printed_warnings[0].splitlines()[0]
        out.reasons.append(
            f"{len(out.printed_warnings)} warning(s) would also print on "
            f"stderr, first: {first[:100]}"
        )
    missing = _missing(lines[-1] if len(lines) == 1 else out.message, case.needles)
    if missing:
        out.reasons.append("message lacks " + ", ".join(missing))
    if out.leftovers:
        out.reasons.append("left behind " + ", ".join(out.leftovers))
    out.status = "unclear" if out.reasons else "clear"


def _classify_api(case: Case, out: Outcome) -> None:
    exc = getattr(out, "_exc", None)
    if exc is None:
        out.status = "silent"
        out.reasons.append("no exception: the call returned")
        if out.leftovers:
            out.reasons.append("left behind " + ", ".join(out.leftovers))
        return
    if not isinstance(exc, ACCEPTED_API_ERRORS):
        out.status = "traceback"
        out.reasons.append(
            f"raised {type(exc).__name__}, not a ValueError/TypeError/"
            "FloatingPointError/FileNotFoundError"
        )
        return
    lines = _nonempty_lines(out.message)
    if len(lines) != 1:
        out.reasons.append(f"message has {len(lines)} non-empty lines, not 1")
    missing = _missing(out.message, case.needles)
    if missing:
        out.reasons.append("message lacks " + ", ".join(missing))
    if out.leftovers:
        out.reasons.append("left behind " + ", ".join(out.leftovers))
    out.status = "unclear" if out.reasons else "clear"


def _classify_warning(case: Case, out: Outcome, caught, value, tmp_path: Path) -> None:
    if case.kind == "cli":
        if out.exception is not None:
            out.status = "traceback"
            out.reasons.append(f"exception escaped: {out.exception.split(':')[0]}")
            return
        if out.exit_code != 0:
            out.status = "unclear"
            out.reasons.append(f"exit code {out.exit_code}: the run failed instead of warning")
            return
        recorded_w = _matching_warnings(caught, case.needles)
        notice = re.compile(r"warn|collapse|\bess\b", re.IGNORECASE)
        echoed = [
            ln
            for ln in _nonempty_lines(out.message + "\n" + out.stdout)
            if notice.search(ln) and not _missing(ln, case.needles)
        ]
        n = max(len(recorded_w), len(echoed))
        any_warning = bool(caught) or "warn" in (out.message + out.stdout).lower()
    else:
        exc = getattr(out, "_exc", None)
        if exc is not None:
            out.status = "traceback" if not isinstance(exc, ACCEPTED_API_ERRORS) else "unclear"
            out.reasons.append(f"raised {type(exc).__name__} instead of warning")
            return
        n = len(_matching_warnings(caught, case.needles))
        any_warning = any(issubclass(w.category, UserWarning) for w in caught)
    if n == 0:
        wrong = _wrong_category(caught, case.needles)
        if wrong:
            out.status = "unclear"
            out.reasons.append(f"warned with {', '.join(wrong)}, not a UserWarning (subclass)")
            return
        out.status = "unclear" if any_warning else "silent"
        out.reasons.append("no warning naming " + ", ".join(_needle_text(x) for x in case.needles))
        return
    if n != case.warnings_expected:
        out.reasons.append(f"{n} matching warnings, expected {case.warnings_expected}")
    if case.recorded is not None:
        try:
            ok = bool(case.recorded(value, tmp_path))
        except Exception as exc:
            ok = False
            out.reasons.append(f"checking the record failed: {type(exc).__name__}: {exc}")
        if not ok:
            out.reasons.append("the collapse is not recorded in the run")
    if out.leftovers:
        out.reasons.append("left behind " + ", ".join(out.leftovers))
    out.status = "unclear" if out.reasons else "clear"


# --------------------------------------------------------------------------- shared artefacts


class _Shared:
    """Artefacts made once per session (pytest) or per probe run: a tiny dataset made by
    ``genfilter data`` and one finished ``genfilter filter`` run of :data:`BASE_CONFIG`."""

    root: Path | None = None
    _made: ClassVar[dict[str, Path]] = {}

    @classmethod
    def set_root(cls, root: Path) -> None:
        cls.root = Path(root)
        cls._made = {}

    @classmethod
    def _root(cls) -> Path:
        if cls.root is None:
            cls.root = Path(tempfile.mkdtemp(prefix="genfilter-failures-"))
            import atexit

            atexit.register(shutil.rmtree, cls.root, True)
        return cls.root

    @classmethod
    def _invoke(cls, argv, cwd: Path) -> None:
        from genfilter.cli import app

        old = os.getcwd()
        os.chdir(cwd)
        try:
            result = _runner().invoke(app, [str(a) for a in argv])
        finally:
            os.chdir(old)
        if result.exit_code != 0:
            raise RuntimeError(
                f"genfilter {' '.join(map(str, argv))} failed "
                f"({result.exit_code}): {_stderr(result)} {result.exception!r}"
            )

    @classmethod
    def dataset(cls) -> Path:
        """``genfilter data lorenz63`` with 10 trajectories of 5 snapshots (about 2 s)."""
        if "dataset" not in cls._made:
            path = cls._root() / "l63-data"
            if not (path / "train.nc").is_file():
                cls._invoke(
                    [
                        "data",
                        "lorenz63",
                        "--out",
                        path,
                        "--trajectories",
                        10,
                        "--length",
                        5,
                        "--burn-in",
                        0.5,
                        "--no-progress",
                    ],
                    cls._root(),
                )
            cls._made["dataset"] = path
        return cls._made["dataset"]

    @classmethod
    def finished_run(cls) -> Path:
        """A finished run of :data:`BASE_CONFIG` (seed 0)."""
        if "run" not in cls._made:
            folder = cls._root() / "run"
            folder.mkdir(exist_ok=True)
            path = folder / "run.nc"
            if not path.is_file():
                write_config(folder, "c.yaml")
                cls._invoke(["filter", "c.yaml", "--out", "run.nc", "--no-progress"], folder)
            cls._made["run"] = path
        return cls._made["run"]


# --------------------------------------------------------------------------- helpers

BASE_CONFIG: dict[str, Any] = {
    "name": "t",
    "system": "lorenz63",
    "emulator": "shipped",
    "emulator_options": {"steps": 4},
    "observations": {"operator": "select", "indices": [0, 2], "noise_std": 0.25},
    "initial": {"recipe": "perturbed", "std": 0.0, "spinup": 1.0},
    "filter": {"method": "fa-apf", "particles": 4, "options": {}},
    "steps": 3,
    "burn_in": 0,
    "runs": 1,
    "seed": 0,
}

DROP = object()  # in config changes: remove the key


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for k, v in changes.items():
        if v is DROP:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict) and not v.get("__replace__"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = (
                {a: b for a, b in v.items() if a != "__replace__"} if isinstance(v, dict) else v
            )
    return out


def write_config(folder: Path, name: str = "c.yaml", **changes) -> Path:
    """Writes :data:`BASE_CONFIG` with nested ``changes`` (dicts merge; ``DROP`` removes;
    ``{"__replace__": True, ...}`` replaces a section) as YAML."""
    import yaml

    path = Path(folder) / name
    path.write_text(yaml.safe_dump(_merge(BASE_CONFIG, changes), sort_keys=False))
    return path


def shipped_checkpoint() -> Path:
    """The Lorenz-63 checkpoint shipped inside the importable genfilter package."""
    import genfilter

    return Path(genfilter.__file__).parent / "checkpoints" / "lorenz63.pt"


FILTER_ARGV = ["filter", "c.yaml", "--out", "o.nc", "--no-progress"]
TRAIN_FLAGS = ["--epochs", "1", "--batch-size", "32", "--hidden", "8", "--no-progress"]
VALIDATE_FLAGS = [
    "--states",
    "2",
    "--samples",
    "4",
    "--rollout",
    "0",
    "--steps",
    "2",
    "--no-progress",
]


def _write_truncated(path: Path) -> None:
    data = shipped_checkpoint().read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_random(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def _write_foreign_torch(path: Path) -> None:
    import torch

    torch.save({"a": 1}, path)


def _write_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(argparse.Namespace(a=1, b=[1, 2])))


def _write_nan_checkpoint(path: Path) -> None:
    import torch

    ckpt = torch.load(shipped_checkpoint(), weights_only=True, map_location="cpu")
    ckpt["state_dict"] = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in ckpt["state_dict"].items()
    }
    torch.save(ckpt, path)


BAD_CHECKPOINTS = {
    "truncated": _write_truncated,
    "random-bytes": _write_random,
    "foreign-torch": _write_foreign_torch,
    "pickle": _write_pickle,
}


class ToyEmulator:
    """A cheap emulator on ``(2,)`` states: ``x' = 0.9 x + 0.1 ε``; its "posterior" sample
    ignores the observation and has std ``posterior_std`` (enough for fault cases)."""

    state_shape = (2,)

    def __init__(self, posterior_std: float = 0.1) -> None:
        self.posterior_std = posterior_std

    def _noise(self, x, std, generator):
        import torch

        return std * torch.randn(x.shape, generator=generator, dtype=x.dtype)

    def sample(self, x_prev, *, generator=None):
        return 0.9 * x_prev + self._noise(x_prev, 0.1, generator)

    def predict_mean(self, x_prev, *, generator=None):
        return 0.9 * x_prev

    def sample_posterior(self, x_prev, obs, *, generator=None):
        return 0.9 * x_prev + self._noise(x_prev, self.posterior_std, generator)


class FaultyEmulator(ToyEmulator):
    """:class:`ToyEmulator` whose ``method`` returns ``value`` in member ``member`` at its
    ``call``-th call (1-based)."""

    def __init__(self, method: str, call: int, value: float, member: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.fault = (method, call, value, member)
        self.calls: dict[str, int] = {}

    def _maybe(self, name, out):
        method, call, value, member = self.fault
        self.calls[name] = self.calls.get(name, 0) + 1
        if name == method and self.calls[name] == call:
            out = out.clone()
            out[member] = value
        return out

    def sample(self, x_prev, *, generator=None):
        return self._maybe("sample", super().sample(x_prev, generator=generator))

    def predict_mean(self, x_prev, *, generator=None):
        return self._maybe("predict_mean", super().predict_mean(x_prev, generator=generator))

    def sample_posterior(self, x_prev, obs, *, generator=None):
        return self._maybe(
            "sample_posterior", super().sample_posterior(x_prev, obs, generator=generator)
        )


def toy_twin(
    steps: int = 5,
    n: int = 8,
    noise_std: float = 0.5,
    observed: Sequence[int] | None = None,
    spread: float = 1.0,
    seed: int = 0,
):
    """``(particles0 (n, 2), observations, truth (steps, 2))`` in float64 for the toy model;
    ``observed`` lists the steps with an observation (``None`` elsewhere; default all)."""
    import torch

    import genfilter as gf

    g = torch.Generator().manual_seed(seed)
    x = torch.tensor([1.0, -1.0], dtype=torch.float64)
    truth = []
    for _ in range(steps):
        x = 0.9 * x + 0.1 * torch.randn(2, generator=g, dtype=torch.float64)
        truth.append(x)
    truth = torch.stack(truth)
    obs = gf.synthetic_observations(
        truth, gf.Identity(), gf.isotropic_noise(noise_std), generator=g
    )
    if observed is not None:
        obs = [o if k in set(observed) else None for k, o in enumerate(obs)]
    p0 = truth[0] + spread * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return p0, obs, truth


def _collapse_twin(steps: int, observed: Sequence[int], n: int = 8):
    """A twin where FA-APF's weights collapse at every observed step: tiny observation noise
    (std 1e-7, so β_min = 1e-12 still leaves log-weight gaps of ~100) and particles spread
    widely (the toy posterior has std 3)."""
    import torch

    import genfilter as gf

    p0 = torch.stack(
        [torch.arange(1, n + 1, dtype=torch.float64), torch.arange(1, n + 1, dtype=torch.float64)],
        1,
    )
    noise = gf.isotropic_noise(1e-7)
    y = torch.zeros(2, dtype=torch.float64)
    obs = [
        gf.Observation(y, gf.Identity(), noise) if k in set(observed) else None
        for k in range(steps)
    ]
    return p0, obs


def _says_collapse(key: str, value) -> bool:
    """``key = value`` records a weight collapse: ``*collapse*`` true, ``*target_met*`` /
    ``*converged*`` false, ``*target_missed*`` / ``*unmet*`` true."""
    k = key.lower()
    if "collapse" in k or "target_missed" in k or "unmet" in k:
        return bool(value) and value is not None
    if "target_met" in k or "converged" in k:
        return value is False or (value is not None and value == 0)
    return False


def _records_collapse(run, tmp_path=None) -> bool:
    """The run records the collapse at some step: a StepInfo field or ``extra`` key (or a
    run attribute) that says so (:func:`_says_collapse`)."""
    for info in getattr(run, "infos", None) or []:
        fields = dict(getattr(info, "__dict__", None) or {})
        fields.update(getattr(info, "extra", None) or {})
        if any(_says_collapse(str(k), v) for k, v in fields.items() if k != "extra"):
            return True
    return any(
        _says_collapse(str(k), v)
        for k, v in (getattr(run, "__dict__", None) or {}).items()
        if not isinstance(v, (list, dict))
    )


def _file_records_collapse(_value, tmp_path: Path) -> bool:
    """``o.nc`` records the collapse: a variable whose name and values say so
    (:func:`_says_collapse`, any element), an attribute likewise, or a global attribute
    whose text mentions "collapse" (the config and history aside)."""
    import numpy as np
    import xarray as xr

    with xr.open_dataset(tmp_path / "o.nc", engine="h5netcdf") as ds:
        for name, var in ds.variables.items():
            try:
                values = np.asarray(var.values, dtype=float).ravel()
            except (TypeError, ValueError):
                continue
            if any(_says_collapse(str(name), v) for v in values[np.isfinite(values)]):
                return True
        attrs = dict(ds.attrs)
        for var in ds.variables.values():
            attrs.update({f"{k}": v for k, v in var.attrs.items()})
        if any(
            _says_collapse(str(k), v)
            for k, v in attrs.items()
            if isinstance(v, (bool, int, float, np.number))
        ):
            return True
        return any(
            "collapse" in str(v).lower()
            for k, v in ds.attrs.items()
            if k not in ("config", "history")
        )


# --------------------------------------------------------------------------- the cases

CASES: list[Case] = []


def _add(id: str, cls: str, kind: str, setup, needles=(), **kw) -> None:
    CASES.append(Case(id, cls, kind, setup, tuple(needles), **kw))


def _filter_case(id: str, cls: str, needles, *, argv_extra=(), prepare=None, **changes):
    """A ``genfilter filter c.yaml --out o.nc`` case with a changed config."""

    def setup(tmp: Path):
        if prepare is not None:
            prepare(tmp)
        write_config(tmp, "c.yaml", **changes)
        return [*FILTER_ARGV, *argv_extra]

    _add(id, cls, "cli", setup, needles)


# ---- checkpoint: truncated / random bytes / foreign × filter, validate, train --resume
for _kind, _writer in BAD_CHECKPOINTS.items():
    _name = f"{_kind}.pt"

    def _setup_filter(tmp, _writer=_writer, _name=_name):
        _writer(tmp / _name)
        write_config(tmp, "c.yaml", emulator=_name, emulator_options={"__replace__": True})
        return FILTER_ARGV

    def _setup_validate(tmp, _writer=_writer, _name=_name):
        _writer(tmp / _name)
        return ["validate", _name, *VALIDATE_FLAGS]

    def _setup_train(tmp, _writer=_writer, _name=_name):
        data = _Shared.dataset()
        _writer(tmp / _name)
        return ["train", "lorenz63", "--data", data, "--out", _name, "--resume", *TRAIN_FLAGS]

    _add(f"filter-{_kind}-checkpoint", "checkpoint", "cli", _setup_filter, [_name])
    _add(f"validate-{_kind}-checkpoint", "checkpoint", "cli", _setup_validate, [_name])
    _add(f"train-resume-{_kind}-checkpoint", "checkpoint", "cli", _setup_train, [_name])


def _setup_l63_ckpt_in_l96(tmp):
    shutil.copy(shipped_checkpoint(), tmp / "l63.pt")
    write_config(
        tmp,
        "c.yaml",
        system="lorenz96",
        emulator="l63.pt",
        emulator_options={"__replace__": True},
        initial={"std": 1.0},
    )
    return FILTER_ARGV


_add(
    "filter-lorenz63-checkpoint-in-lorenz96-config",
    "checkpoint",
    "cli",
    _setup_l63_ckpt_in_l96,
    ["l63.pt", ("lorenz63", "lorenz96")],
    note="the checkpoint records system lorenz63 in its meta",
)


def _setup_validate_other_system(tmp):
    shutil.copy(shipped_checkpoint(), tmp / "l63.pt")
    return ["validate", "l63.pt", "--system", "lorenz96", *VALIDATE_FLAGS]


_add(
    "validate-lorenz63-checkpoint-as-lorenz96",
    "checkpoint",
    "cli",
    _setup_validate_other_system,
    ["l63.pt", ("lorenz63", "lorenz96")],
)


# ---- report input
def _report_file(writer, name="x.nc"):
    def setup(tmp):
        writer(tmp / name)
        return ["report", name]

    return setup


def _write_text(path: Path) -> None:
    path.write_text("this is not a netCDF file\n")


def _write_foreign_netcdf(path: Path) -> None:
    import numpy as np
    import xarray as xr

    xr.Dataset(
        {"state": (("time", "component"), np.zeros((4, 3)))}, attrs={"title": "not a genfilter run"}
    ).to_netcdf(path, engine="h5netcdf")


_add("report-text-file-named-nc", "report input", "cli", _report_file(_write_text), ["x.nc"])
_add("report-random-bytes-nc", "report input", "cli", _report_file(_write_random), ["x.nc"])
_add(
    "report-netcdf-not-a-run",
    "report input",
    "cli",
    _report_file(_write_foreign_netcdf),
    ["x.nc"],
    note="a valid netCDF file without the variables of a genfilter run",
)


def _setup_report_empty(tmp):
    (tmp / "runs").mkdir()
    return ["report", "runs"]


def _setup_report_missing(tmp):
    return ["report", "missing.nc"]


def _setup_report_folder_bad_file(tmp):
    (tmp / "runs").mkdir()
    shutil.copy(_Shared.finished_run(), tmp / "runs" / "good.nc")
    _write_foreign_netcdf(tmp / "runs" / "bad.nc")
    return ["report", "runs"]


_add("report-empty-folder", "report input", "cli", _setup_report_empty, ["runs"])
_add("report-missing-path", "report input", "cli", _setup_report_missing, ["missing.nc"])
_add(
    "report-folder-with-a-foreign-netcdf",
    "report input",
    "cli",
    _setup_report_folder_bad_file,
    ["bad.nc"],
    note="a folder with one good run and one netCDF that is not a run: no report.md/csv "
    "or figures may be written",
)


# ---- output path
def _blocker(tmp: Path) -> None:
    (tmp / "blocker").write_text("a regular file where a folder is needed\n")


_filter_case(
    "filter-out-parent-is-a-file",
    "output path",
    ["blocker"],
    argv_extra=["--out", "blocker/o.nc"],
    prepare=_blocker,
)


def _setup_out_is_folder(tmp):
    (tmp / "run.nc").mkdir()
    write_config(tmp, "c.yaml")
    return [*FILTER_ARGV, "--out", "run.nc"]


_add(
    "filter-out-is-a-folder",
    "output path",
    "cli",
    _setup_out_is_folder,
    ["run.nc"],
    note="--out names an existing folder (with a .nc suffix)",
)
_filter_case("filter-out-not-nc", "output path", ["o.txt"], argv_extra=["--out", "o.txt"])


def _setup_train_blocked(tmp):
    data = _Shared.dataset()
    _blocker(tmp)
    return ["train", "lorenz63", "--data", data, "--out", "blocker/m.pt", *TRAIN_FLAGS]


def _setup_data_blocked(tmp):
    _blocker(tmp)
    return [
        "data",
        "lorenz63",
        "--out",
        "blocker/d",
        "--trajectories",
        "10",
        "--length",
        "5",
        "--no-progress",
    ]


def _setup_demo_blocked(tmp):
    _blocker(tmp)
    return [
        "demo",
        "--system",
        "linear-gaussian",
        "--out",
        "blocker/demo",
        "--particles",
        "4",
        "--steps",
        "2",
        "--no-progress",
    ]


def _setup_report_blocked(tmp):
    shutil.copy(_Shared.finished_run(), tmp / "o.nc")
    (tmp / "o_report").write_text("a regular file where the report folder goes\n")
    return ["report", "o.nc"]


_add("train-out-parent-is-a-file", "output path", "cli", _setup_train_blocked, ["blocker"])
_add("data-out-parent-is-a-file", "output path", "cli", _setup_data_blocked, ["blocker"])
_add("demo-out-parent-is-a-file", "output path", "cli", _setup_demo_blocked, ["blocker"])
_add(
    "report-folder-is-a-file",
    "output path",
    "cli",
    _setup_report_blocked,
    ["o_report"],
    note="report writes into <stem>_report/, here a regular file",
)


# ---- config types
_T = "config types"
_filter_case(
    "emulator-options-steps-string",
    _T,
    ["emulator_options.steps"],
    emulator_options={"steps": "ten"},
)
_filter_case(
    "emulator-options-steps-float",
    _T,
    ["emulator_options.steps"],
    emulator_options={"steps": 2.5},
)
_filter_case(
    "emulator-options-covariance-int",
    _T,
    ["emulator_options.covariance"],
    emulator_options={"covariance": 3},
)
_filter_case(
    "emulator-options-eta-string", _T, ["emulator_options.eta"], emulator_options={"eta": "fast"}
)
_filter_case(
    "emulator-options-unknown-key", _T, ["emulator_options.bogus"], emulator_options={"bogus": 1}
)
_filter_case(
    "system-options-epsilon-string", _T, ["system_options.epsilon"], system_options={"epsilon": "x"}
)
_filter_case(
    "system-options-unknown-key", _T, ["system_options.bogus"], system_options={"bogus": 1}
)
_filter_case(
    "filter-options-ess-interval-string",
    _T,
    ["filter.options.ess_interval"],
    filter={"options": {"ess_interval": "wide"}},
)
_filter_case(
    "filter-options-inflation-string",
    _T,
    ["filter.options.inflation"],
    filter={"method": "enkf", "options": {"inflation": "x"}},
)
_filter_case(
    "filter-options-weights-int", _T, ["filter.options.weights"], filter={"options": {"weights": 5}}
)
_filter_case(
    "filter-options-resample-threshold-string",
    _T,
    ["filter.options.resample_threshold"],
    filter={"method": "bpf", "options": {"resample_threshold": "half"}},
)
_filter_case("filter-particles-string", _T, ["filter.particles"], filter={"particles": "many"})

# ---- config values
_V = "config values"
_filter_case("particles-one", _V, ["filter.particles"], filter={"particles": 1})
_filter_case("steps-zero", _V, ["steps"], steps=0)
_filter_case("burn-in-not-below-steps", _V, ["burn_in"], burn_in=3)
_filter_case("unknown-method", _V, ["filter.method"], filter={"method": "magic"})
_filter_case("unknown-top-level-field", _V, ["stepz"], stepz=3)
_filter_case(
    "select-index-out-of-range",
    _V,
    ["observations.indices"],
    observations={"indices": [0, 5]},
)
_filter_case(
    "emulator-options-steps-zero", _V, ["emulator_options.steps"], emulator_options={"steps": 0}
)
_filter_case(
    "coarsen-factor-not-dividing",
    _V,
    ["observations.factor", "2"],
    observations={"__replace__": True, "operator": "coarsen", "factor": 2, "noise_std": 0.25},
)
_filter_case(
    "factor-without-coarsen",
    _V,
    ["observations.factor", "coarsen"],
    observations={"factor": 3},
)
_filter_case("device-unknown", _V, ["--device", "tpu9"], argv_extra=("--device", "tpu9"))
_filter_case("device-cuda-absent", _V, ["--device", "cuda"], argv_extra=("--device", "cuda"))
_filter_case(
    "system-options-epsilon-negative",
    _V,
    ["system_options.epsilon"],
    system_options={"epsilon": -1.0},
)
_filter_case(
    "system-options-rho-nan", _V, ["system_options.rho"], system_options={"rho": float("nan")}
)
_filter_case(
    "filter-options-ess-interval-reversed",
    _V,
    ["filter.options.ess_interval"],
    filter={"options": {"ess_interval": [0.9, 0.1]}},
)
_filter_case(
    "emulator-checkpoint-missing",
    _V,
    ["emulator", "nowhere.pt"],
    emulator="nowhere.pt",
    emulator_options={"__replace__": True},
)


def _raw_config(text: str, name: str):
    def setup(tmp):
        (tmp / name).write_text(text)
        return ["filter", name, "--out", "o.nc", "--no-progress"]

    return setup


_add(
    "yaml-syntax-error",
    _V,
    "cli",
    _raw_config("name: t\nsystem: [lorenz63\nfilter: {method: fa-apf\n", "bad.yaml"),
    ["bad.yaml"],
)
_add("empty-config-file", _V, "cli", _raw_config("", "empty.yaml"), ["empty.yaml"])
_add(
    "config-is-a-list",
    _V,
    "cli",
    _raw_config("- name: t\n- system: lorenz63\n", "list.yaml"),
    ["list.yaml"],
)


# ---- resume
def _setup_resume_finished_other(tmp):
    shutil.copy(_Shared.finished_run(), tmp / "o.nc")
    write_config(tmp, "c.yaml")
    return [*FILTER_ARGV, "--resume", "--seed", "1"]


def _setup_parts_without_config(tmp):
    (tmp / "o.nc.parts").mkdir()
    write_config(tmp, "c.yaml")
    return [*FILTER_ARGV, "--resume"]


def _setup_parts_other_config(tmp):
    (tmp / "o.nc.parts").mkdir()
    write_config(tmp / "o.nc.parts", "config.yaml", seed=1)
    write_config(tmp, "c.yaml")
    return [*FILTER_ARGV, "--resume"]


def _setup_parts_without_resume(tmp):
    (tmp / "o.nc.parts").mkdir()
    write_config(tmp / "o.nc.parts", "config.yaml")
    write_config(tmp, "c.yaml")
    return FILTER_ARGV


def _setup_parts_corrupt_step(tmp):
    (tmp / "o.nc.parts").mkdir()
    write_config(tmp / "o.nc.parts", "config.yaml")
    _write_random(tmp / "o.nc.parts" / "run0000.pt")
    write_config(tmp, "c.yaml")
    return [*FILTER_ARGV, "--resume"]


def _setup_parts_locked(tmp):
    import socket

    (tmp / "o.nc.parts").mkdir()
    write_config(tmp / "o.nc.parts", "config.yaml")
    # the parent of the test process: alive, and not the process that runs the CLI
    (tmp / "o.nc.parts" / "lock").write_text(f"{os.getppid()} {socket.gethostname()}")
    write_config(tmp, "c.yaml")
    return [*FILTER_ARGV, "--resume"]


_R = "resume"
_add(
    "resume-parts-locked-by-a-running-process",
    _R,
    "cli",
    _setup_parts_locked,
    ["o.nc.parts", "being written", "lock"],
    note="another live process holds .parts/lock: --resume must refuse, not interleave",
)
_add(
    "resume-output-finished-from-another-config",
    _R,
    "cli",
    _setup_resume_finished_other,
    ["o.nc"],
    note="o.nc was finished with seed 0; --resume --seed 1 must refuse, not overwrite",
)
_add(
    "resume-parts-without-config", _R, "cli", _setup_parts_without_config, ["o.nc.parts", "config"]
)
_add("resume-parts-from-another-config", _R, "cli", _setup_parts_other_config, ["o.nc.parts"])
_add("parts-exists-without-resume", _R, "cli", _setup_parts_without_resume, ["o.nc.parts"])
_add(
    "resume-corrupt-step-checkpoint",
    _R,
    "cli",
    _setup_parts_corrupt_step,
    [("o.nc.parts", "run0000.pt")],
    note="the per-run checkpoint in .parts/ is random bytes (the config.yaml is the "
    "current one, so today's comparison of parsed configs passes)",
)


# ---- non-finite values mid-run (API) and a checkpoint with NaN weights (CLI)
_N = "non-finite"
FAAPF_NAMES = ("FAAPF", "FA-APF")


def _api_nonfinite(filter_factory, emulator_factory, steps=5):
    def setup(tmp):
        import genfilter as gf

        p0, obs, truth = toy_twin(steps=steps)
        filt = filter_factory(gf, emulator_factory())
        return lambda: gf.assimilate(filt, p0, obs, truth=truth, progress=False)

    return setup


_add(
    "bpf-sample-nan-at-step-3",
    _N,
    "api",
    _api_nonfinite(
        lambda gf, em: gf.BootstrapPF(em, generator=0),
        lambda: FaultyEmulator("sample", 3, float("nan")),
    ),
    ["BootstrapPF", step_re(2, 3)],
)
_add(
    "bpf-sample-inf-at-step-3",
    _N,
    "api",
    _api_nonfinite(
        lambda gf, em: gf.BootstrapPF(em, resample_threshold=1.0, generator=0),
        lambda: FaultyEmulator("sample", 3, float("inf")),
    ),
    ["BootstrapPF", step_re(2, 3)],
    note="resampling at every step drops the +inf member (zero weight) without a word",
)
_add(
    "fa-apf-predict-mean-inf-at-step-3",
    _N,
    "api",
    _api_nonfinite(
        lambda gf, em: gf.FAAPF(em, generator=0),
        lambda: FaultyEmulator("predict_mean", 3, float("inf")),
    ),
    [FAAPF_NAMES, step_re(2, 3)],
    note="an infinite predictive mean gives that particle zero weight silently",
)
_add(
    "fa-apf-predict-mean-nan-at-step-3",
    _N,
    "api",
    _api_nonfinite(
        lambda gf, em: gf.FAAPF(em, generator=0),
        lambda: FaultyEmulator("predict_mean", 3, float("nan")),
    ),
    [FAAPF_NAMES, step_re(2, 3)],
)
_add(
    "fa-apf-sample-posterior-nan-at-step-3",
    _N,
    "api",
    _api_nonfinite(
        lambda gf, em: gf.FAAPF(em, generator=0),
        lambda: FaultyEmulator("sample_posterior", 3, float("nan")),
    ),
    [FAAPF_NAMES, step_re(2, 3)],
)
_add(
    "enkf-forecast-nan-member-at-step-3",
    _N,
    "api",
    _api_nonfinite(
        lambda gf, em: gf.EnKF(em, generator=0), lambda: FaultyEmulator("sample", 3, float("nan"))
    ),
    ["EnKF", step_re(2, 3)],
)
_add(
    "enkf-forecast-neginf-member-at-step-3",
    _N,
    "api",
    _api_nonfinite(
        lambda gf, em: gf.EnKF(em, generator=0), lambda: FaultyEmulator("sample", 3, float("-inf"))
    ),
    ["EnKF", step_re(2, 3)],
)


def _setup_nan_checkpoint(tmp):
    _write_nan_checkpoint(tmp / "nan.pt")
    write_config(tmp, "c.yaml", emulator="nan.pt")
    return FILTER_ARGV


_add(
    "filter-checkpoint-with-nan-weights",
    _N,
    "cli",
    _setup_nan_checkpoint,
    [("nan.pt", step_re(0, 1))],
    note="either the load names the file or the run names the (first) step",
)


# ---- weight collapse: the ESS target cannot be met even at the smallest inflation
_W = "weights collapse"


def _setup_collapse_two_steps(tmp):
    import genfilter as gf

    p0, obs = _collapse_twin(steps=4, observed=[1, 3])
    filt = gf.FAAPF(ToyEmulator(posterior_std=3.0), generator=0)
    return lambda: gf.assimilate(filt, p0, obs, progress=False)


def _setup_collapse_two_runs(tmp):
    import genfilter as gf

    def action():
        runs = []
        for seed in (0, 1):
            p0, obs = _collapse_twin(steps=4, observed=[1, 3])
            filt = gf.FAAPF(ToyEmulator(posterior_std=3.0), generator=seed)
            runs.append(gf.assimilate(filt, p0, obs, progress=False))
        return runs

    return action


def _setup_collapse_bpf(tmp):
    import genfilter as gf

    p0, obs = _collapse_twin(steps=4, observed=[1, 3])
    filt = gf.BootstrapPF(
        ToyEmulator(), ess_interval=(0.2, 0.25), resample_threshold=1.0, generator=0
    )
    return lambda: gf.assimilate(filt, p0, obs, progress=False)


_add(
    "fa-apf-collapse-two-steps-one-warning",
    _W,
    "api",
    _setup_collapse_two_steps,
    [step_re(1, 2)],
    expect="warning",
    recorded=_records_collapse,
    note="observations at steps 1 and 3 (0-based) only, both collapse: one warning naming "
    "the first",
)
_add(
    "fa-apf-collapse-two-runs-two-warnings",
    _W,
    "api",
    _setup_collapse_two_runs,
    [step_re(1, 2)],
    expect="warning",
    warnings_expected=2,
    recorded=lambda runs, _t: all(_records_collapse(r) for r in runs),
    note="'once per run': two assimilate calls warn once each",
)
_add(
    "bpf-tempering-collapse-one-warning",
    _W,
    "api",
    _setup_collapse_bpf,
    [step_re(1, 2)],
    expect="warning",
    recorded=_records_collapse,
    note="BPF with ess_interval uses the same inflation search; unsure the issue covers it",
)


def _setup_collapse_cli(tmp):
    write_config(
        tmp,
        "c.yaml",
        observations={"noise_std": 1e-7},
        initial={"std": 5.0},
        filter={"particles": 8},
    )
    return FILTER_ARGV


_add(
    "cli-fa-apf-collapse-warns-and-records",
    _W,
    "cli",
    _setup_collapse_cli,
    [step_re(0, 1)],
    expect="warning",
    recorded=_file_records_collapse,
    allowed=("o.nc",),
    note="observation noise 1e-7 with an initial spread of 5: the ESS target is out of "
    "reach at β = 1e-12; o.nc must record it",
)


# ---- API arguments
_A = "API arguments"


def _api(fn):
    def setup(tmp):
        import genfilter as gf

        return lambda: fn(gf)

    return setup


def _assimilate_with(p0_fn=None, truth_fn=None):
    def fn(gf):
        p0, obs, truth = toy_twin(steps=3)
        if p0_fn is not None:
            p0 = p0_fn(p0)
        if truth_fn is not None:
            truth = truth_fn(truth)
        return gf.assimilate(
            gf.EnKF(ToyEmulator(), generator=0), p0, obs, truth=truth, progress=False
        )

    return fn


def _set(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


def _lg_q_inf(gf):
    import torch

    Q = torch.eye(2, dtype=torch.float64)
    Q[0, 0] = float("inf")
    return gf.LinearGaussianEmulator(0.9 * torch.eye(2), torch.zeros(2), Q)


def _synthetic_nan_truth(gf):
    import torch

    truth = torch.zeros(3, 2, dtype=torch.float64)
    truth[1, 0] = float("nan")
    return gf.synthetic_observations(truth, gf.Identity(), gf.isotropic_noise(0.5))


_add(
    "fa-apf-ess-interval-string",
    _A,
    "api",
    _api(lambda gf: gf.FAAPF(ToyEmulator(), ess_interval="wide")),
    ["ess_interval"],
)
_add(
    "fa-apf-ess-interval-nan",
    _A,
    "api",
    _api(lambda gf: gf.FAAPF(ToyEmulator(), ess_interval=(float("nan"), 0.5))),
    ["ess_interval"],
)
_add(
    "fa-apf-weights-int",
    _A,
    "api",
    _api(lambda gf: gf.FAAPF(ToyEmulator(), weights=5)),
    ["weights"],
)
_add(
    "enkf-inflation-string",
    _A,
    "api",
    _api(lambda gf: gf.EnKF(ToyEmulator(), inflation="x")),
    ["inflation"],
)
_add(
    "enkf-inflation-inf",
    _A,
    "api",
    _api(lambda gf: gf.EnKF(ToyEmulator(), inflation=float("inf"))),
    ["inflation"],
    note="accepted today; the first analysis is then all inf",
)
_add(
    "bpf-resample-threshold-inf",
    _A,
    "api",
    _api(lambda gf: gf.BootstrapPF(ToyEmulator(), resample_threshold=float("inf"))),
    ["resample_threshold"],
)
_add(
    "assimilate-particles0-inf",
    _A,
    "api",
    _api(_assimilate_with(p0_fn=lambda p: _set(p, (2, 1), float("inf")))),
    ["particles0"],
)
_add(
    "assimilate-particles0-numpy",
    _A,
    "api",
    _api(_assimilate_with(p0_fn=lambda p: p.numpy())),
    ["particles0"],
)
_add(
    "assimilate-truth-inf",
    _A,
    "api",
    _api(_assimilate_with(truth_fn=lambda t: _set(t, (1, 0), float("inf")))),
    ["truth"],
    note="±inf is treated like NaN everywhere: an infinite truth gives infinite metrics",
)
_add(
    "synthetic-observations-nan-truth",
    _A,
    "api",
    _api(_synthetic_nan_truth),
    ["truth"],
    note="a NaN in the truth becomes a 'missing' observation without a word; unsure "
    "whether the fix should raise (assumed) or keep NaN = missing",
)
_add("isotropic-noise-inf", _A, "api", _api(lambda gf: gf.isotropic_noise(float("inf"))), ["std"])
_add("linear-gaussian-emulator-q-inf", _A, "api", _api(_lg_q_inf), ["Q"])


# ---- CLI arguments
_C = "CLI arguments"
_add(
    "filter-config-missing",
    _C,
    "cli",
    lambda tmp: ["filter", "missing.yaml", "--out", "o.nc", "--no-progress"],
    ["missing.yaml"],
)
_add(
    "validate-checkpoint-missing",
    _C,
    "cli",
    lambda tmp: ["validate", "missing.pt", *VALIDATE_FLAGS],
    ["missing.pt"],
    note="typer's own check (exists=True) prints a usage panel on several lines",
)
_add(
    "filter-particles-option-below-minimum",
    _C,
    "cli",
    lambda tmp: (write_config(tmp, "c.yaml"), [*FILTER_ARGV, "--particles", "1"])[1],
    ["--particles"],
    note="typer's own range check (min=2) prints a usage panel",
)
_add(
    "filter-method-option-unknown",
    _C,
    "cli",
    lambda tmp: (write_config(tmp, "c.yaml"), [*FILTER_ARGV, "--method", "magic"])[1],
    [("--method", "filter.method")],
)
_add(
    "filter-option-without-value",
    _C,
    "cli",
    lambda tmp: (write_config(tmp, "c.yaml"), [*FILTER_ARGV, "--option", "weights"])[1],
    ["--option", "'weights'"],
)
_add(
    "filter-option-unknown-key",
    _C,
    "cli",
    lambda tmp: (write_config(tmp, "c.yaml"), [*FILTER_ARGV, "--option", "weightz=gaussian"])[1],
    ["filter.options.weightz"],
)
_add(
    "filter-emulator-option-unknown-key",
    _C,
    "cli",
    lambda tmp: (
        write_config(tmp, "c.yaml"),
        [*FILTER_ARGV, "--emulator-option", "mean_sigmaa=0.3"],
    )[1],
    ["emulator_options.mean_sigmaa"],
)
_add(
    "filter-emulator-option-bad-value",
    _C,
    "cli",
    lambda tmp: (
        write_config(tmp, "c.yaml"),
        [*FILTER_ARGV, "--emulator-option", "mean_sigma=-1"],
    )[1],
    ["mean_sigma", "-1"],
)
_add(
    "diagnose-weights-unknown-family",
    _C,
    "cli",
    lambda tmp: ["diagnose", "weights", "--family", "diffusion,magic", "--pairs", "1"],
    ["--family", "'magic'"],
)
_add(
    "train-unknown-system",
    _C,
    "cli",
    lambda tmp: ["train", "lorenz99", "--out", "m.pt", *TRAIN_FLAGS],
    ["lorenz99"],
)
_add(
    "train-channels-for-an-mlp-system",
    _C,
    "cli",
    lambda tmp: ["train", "lorenz63", "--out", "m.pt", "--channels", "8,16", *TRAIN_FLAGS],
    ["--channels", "lorenz63"],
)
_add(
    "train-channels-not-integers",
    _C,
    "cli",
    lambda tmp: ["train", "ns2d", "--out", "m.pt", "--channels", "16,x", "--no-progress"],
    ["--channels", "'16,x'"],
)
_add(
    "train-blocks-one-per-depth",
    _C,
    "cli",
    lambda tmp: ["train", "ns2d", "--out", "m.pt", "--channels", "8,16", "--blocks", "1"],
    ["--blocks", "[1]"],
)
_add(
    "train-dataset-missing",
    _C,
    "cli",
    lambda tmp: ["train", "lorenz63", "--data", "nodata", "--out", "m.pt", *TRAIN_FLAGS],
    ["nodata"],
)
_add(
    "data-too-few-trajectories",
    _C,
    "cli",
    lambda tmp: ["data", "lorenz63", "--out", "d", "--trajectories", "5", "--no-progress"],
    ["trajectories"],
)
_add(
    "demo-unknown-system",
    _C,
    "cli",
    lambda tmp: ["demo", "--system", "foo", "--out", "demo", "--no-progress"],
    ["--system"],
)

_ids = [c.id for c in CASES]
assert len(_ids) == len(set(_ids)), "duplicate case ids"


def counts_by_class(outcomes: Sequence[Outcome]) -> dict[str, dict[str, int]]:
    """``{class: {status: count}}`` in the order the classes first appear."""
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = table.setdefault(o.cls, {s: 0 for s in (*STATUSES, "setup-error")})
        row[o.status] = row.get(o.status, 0) + 1
    return table


# --------------------------------------------------------------------------- pytest

if pytest is not None:

    @pytest.fixture(scope="session", autouse=True)
    def _shared_artefacts(tmp_path_factory):
        _Shared.set_root(tmp_path_factory.mktemp("failures-shared"))
        yield

    @pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
    def test_fault_is_one_clear_line(case: Case, tmp_path: Path) -> None:
        outcome = run_case(case, tmp_path)
        assert outcome.status == "clear", outcome.describe() + (
            f"\nnote: {case.note}" if case.note else ""
        )
