r"""Experiment configs: YAML files validated into typed objects before any work
starts.  Every error names the field (``filter.options.particles``) and
the offending value.

A config describes a twin experiment (docs/experiments.md)::

    name: l63-a                      # label used in files and tables
    setup: l63-a                     # optional: a named setup (experiments/setups.py) that
                                     # provides system, system_options, observations,
                                     # initial and dtype; fields given here replace its own
    system: lorenz63                 # a registered system (genfilter.systems.datasets.SYSTEMS)
    system_options: {}               # its constructor arguments (e.g. epsilon: 0.3)
    emulator: shipped                # "shipped" (Lorenz-63, Lorenz-96, Navier–Stokes 32²), "shipped-interpolant"
                                     # (Lorenz-63, intervals 0.1, 0.5), "true" (the system
                                     # itself), "oracle" (the true model with its optimal
                                     # proposal by importance sampling; option draws) or
                                     # the path of a checkpoint trained for the system
    emulator_options: {}             # sampling options of the emulator (steps, covariance...)
    observations:
      operator: select               # select | identity | subsample | coarsen
      indices: [0, 2]                # select: flat indices of the observed components
      stride: 1                      # subsample: stride along every state axis
      factor: 1                      # coarsen: average over factor^d blocks of the state
      noise_std: 0.25
    initial:
      recipe: perturbed              # perturbed: truth's x^0 + std·N(0, I); climatology
      std: 0.0                       # 0 = N copies of the true initial state
      spinup: 10.0                   # model time on the attractor before x^0
    filter:
      method: fa-apf                 # fa-apf | bpf | enkf | etkf | letkf | ensf | enff |
                                     # flowdas | forecast
      particles: 32
      options: {}                    # constructor arguments of the filter class
    steps: 100                       # assimilation cycles K
    burn_in: 10                      # cycles left out of the summary metrics
    runs: 1                          # independent twins (seeds seed, seed+1, ...)
    seed: 0
    save: particles                  # particles | moments (means and spreads only)
    dtype: float32                   # float32 | float64: the states of the twin
    predictive_check: 0              # > 0: draws of the one-step predictive per step for
                                     # the posterior predictive check (PIT, coverage)

``load_config(path, **overrides)`` returns a :class:`ExperimentConfig`;
:func:`genfilter.experiments.runner.run_config` runs it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ObservationConfig",
    "InitialConfig",
    "FilterConfig",
    "ExperimentConfig",
    "METHODS",
    "parse_config",
    "load_config",
]

import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METHODS = ("fa-apf", "bpf", "enkf", "etkf", "letkf", "ensf", "enff", "flowdas", "forecast")
"""The filter methods (the keys of :data:`genfilter.filters.FILTERS`)."""
OPERATORS = ("select", "identity", "subsample", "coarsen")
RECIPES = ("perturbed", "climatology")
SAVES = ("particles", "moments")
DTYPES = ("float32", "float64")
WRAPPER_OPTIONS = {
    "bpf": ("jitter",),
    "fa-apf": ("jitter", "jitter_scale", "jitter_radius", "jitter_shrink", "jitter_adaptive"),
}
"""Filter options that wrap the forecast model rather than go to the filter's constructor:
the BPF's and FA-APF's ``jitter`` (std of additive Gaussian model noise,
:class:`~genfilter.emulators.jittered.Jittered`; for deterministic models; FA-APF then
weights and proposes with the jittered transition, docs/method.md#model-noise), and
FA-APF's ``jitter_scale`` / ``jitter_radius`` / ``jitter_shrink`` / ``jitter_adaptive`` (model
noise scaled to the ensemble's tapered covariance, kernel centres shrunk towards the mean,
the bandwidth raised by the innovation, :class:`~genfilter.emulators.jittered.SpreadJittered`)."""


class ConfigError(ValueError):
    """A config value is missing or wrong; the message names the field."""


def _fail(path: str, msg: str, value: Any = dataclasses.MISSING) -> None:
    shown = "" if value is dataclasses.MISSING else f", got {value!r}"
    raise ConfigError(f"config field {path!r}: {msg}{shown}")


def _int(d: dict, key: str, path: str, default: Any = dataclasses.MISSING, minimum: int = 0) -> int:
    v = d.get(key, default)
    if v is dataclasses.MISSING:
        _fail(f"{path}{key}", "is required")
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(f"{path}{key}", "must be an integer", v)
    if v < minimum:
        _fail(f"{path}{key}", f"must be >= {minimum}", v)
    return int(v)


def _float(
    d: dict,
    key: str,
    path: str,
    default: Any = dataclasses.MISSING,
    positive: bool = False,
    minimum: float | None = None,
) -> float:
    v = d.get(key, default)
    if v is dataclasses.MISSING:
        _fail(f"{path}{key}", "is required")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(f"{path}{key}", "must be a finite number", v)
    if positive and not v > 0:
        _fail(f"{path}{key}", "must be > 0", v)
    if minimum is not None and v < minimum:
        _fail(f"{path}{key}", f"must be >= {minimum}", v)
    return float(v)


def _choice(d: dict, key: str, path: str, choices, default: Any = dataclasses.MISSING) -> str:
    v = d.get(key, default)
    if v is dataclasses.MISSING:
        _fail(f"{path}{key}", f"is required (one of {list(choices)})")
    if v not in choices:
        _fail(f"{path}{key}", f"must be one of {list(choices)}", v)
    return v


def _mapping(d: dict, key: str, path: str) -> dict:
    v = d.get(key, None)
    if v is None:
        return {}
    if not isinstance(v, dict):
        _fail(f"{path}{key}", "must be a mapping", v)
    return dict(v)


def _section(d: dict, key: str, allowed: set[str], path: str = "") -> dict:
    v = d.get(key, {})
    if v is None:
        v = {}
    if not isinstance(v, dict):
        _fail(f"{path}{key}", "must be a mapping", v)
    _unknown(v, allowed, f"{path}{key}.")
    return v


def _unknown(d: dict, allowed: set[str], path: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        _fail(f"{path}{extra[0]}", f"is not a known field; known: {sorted(allowed)}")


@dataclass(frozen=True)
class ObservationConfig:
    operator: str = "select"
    indices: tuple[int, ...] | None = None
    stride: int = 1
    noise_std: float = 0.25
    factor: int = 1


@dataclass(frozen=True)
class InitialConfig:
    recipe: str = "perturbed"
    std: float = 0.0
    spinup: float = 10.0


@dataclass(frozen=True)
class FilterConfig:
    method: str
    particles: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated twin-experiment config (module docstring)."""

    name: str
    system: str
    filter: FilterConfig
    system_options: dict[str, Any] = field(default_factory=dict)
    emulator: str = "shipped"
    emulator_options: dict[str, Any] = field(default_factory=dict)
    observations: ObservationConfig = ObservationConfig()
    initial: InitialConfig = InitialConfig()
    steps: int = 100
    burn_in: int = 10
    runs: int = 1
    seed: int = 0
    save: str = "particles"
    setup: str | None = None
    dtype: str = "float32"
    predictive_check: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["observations"]["indices"] is not None:
            d["observations"]["indices"] = list(d["observations"]["indices"])
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A validated copy with top-level fields (or ``method``/``particles``) changed;
        ``options``: a mapping merged into ``filter.options`` (after a change of method);
        ``emulator_options``: a mapping merged into ``emulator_options``."""
        d = self.to_dict()
        options = changes.pop("options", None)
        emulator_options = changes.pop("emulator_options", None)
        if emulator_options:
            d["emulator_options"] = {**d.get("emulator_options", {}), **dict(emulator_options)}
        for key, value in changes.items():
            if value is None:
                continue
            if key == "method" and value != d["filter"]["method"]:
                d["filter"] = {
                    "method": value,
                    "particles": d["filter"]["particles"],
                    "options": {},
                }  # options belong to the old method
            elif key in ("method", "particles"):
                d["filter"][key] = value
            else:
                d[key] = value
        if options:
            d["filter"]["options"] = {**d["filter"].get("options", {}), **dict(options)}
        return parse_config(d)


_TOP = {
    "name",
    "setup",
    "system",
    "system_options",
    "emulator",
    "emulator_options",
    "observations",
    "initial",
    "filter",
    "steps",
    "burn_in",
    "runs",
    "seed",
    "save",
    "dtype",
    "predictive_check",
}


def filter_class(method: str):
    """The class of a filter method (:data:`genfilter.filters.FILTERS`)."""
    from ..filters import FILTERS

    return FILTERS[method]


def _accepts_str(annotation) -> bool:
    """Whether a parameter annotation (a string under postponed evaluation, or a type) is
    ``str`` or a union with ``str`` (e.g. ``float | str``)."""
    if isinstance(annotation, str):
        return any(part.strip() == "str" for part in annotation.split("|"))
    return annotation is str or str in typing.get_args(annotation)


def _check_option_types(options: dict, fn, path: str, skip=("self",)) -> None:
    """Checks each option against the keyword parameters of ``fn``: unknown names, and a
    type that cannot match the parameter's default (an integer for an ``int`` default, a
    number for a ``float``, a string, a boolean, a pair for a tuple).  A string is also
    accepted where the annotation allows one (``dps_scale: float | str``); the constructor
    checks its value."""
    params = {
        k: v
        for k, v in inspect.signature(fn).parameters.items()
        if k not in skip and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)
    }
    for key, value in options.items():
        if key not in params:
            _fail(f"{path}.{key}", f"is not an option here; options: {sorted(params)}")
        default = params[key].default
        if default is inspect.Parameter.empty or default is None or value is None:
            continue
        if isinstance(value, str) and _accepts_str(params[key].annotation):
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
            want = "true or false"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            want = "an integer"
        elif isinstance(default, float):
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            want = "a finite number"
        elif isinstance(default, str):
            ok = isinstance(value, str)
            want = "a string"
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple))
            want = "a list"
        else:
            continue
        if not ok:
            _fail(f"{path}.{key}", f"must be {want}", value)


def field_of(exc: Exception, options: dict, path: str) -> str:
    """``path.key`` when the message of ``exc`` (raised by a constructor given ``options``)
    starts with an option's name, else ``path``."""
    text = str(exc)
    for key in sorted(options, key=len, reverse=True):
        if text.startswith(f"{key} ") or text.startswith(f"{key}:") or f"'{key}'" in text:
            return f"{path}.{key}"
    return path


SPECIAL_EMULATORS = ("shipped", "shipped-interpolant", "true", "oracle")
"""The ``emulator`` values that are not checkpoint paths."""


def _emulator_parameters(emulator: str = "shipped"):
    """The constructor whose keywords are the sampling options of ``emulator``: the
    interpolant's for ``shipped-interpolant`` or an interpolant checkpoint, else the
    diffusion emulator's."""
    from ..emulators.diffusion import DiffusionEmulator

    family = "diffusion"
    if emulator == "shipped-interpolant":
        family = "interpolant"
    elif emulator not in ("shipped", "true", "oracle"):
        try:
            import torch

            from ..emulators.training import checkpoint_family

            family = checkpoint_family(torch.load(emulator, weights_only=True, mmap=True))
        except Exception:  # unreadable: load_emulator reports it when the run builds
            family = "diffusion"
    if family == "interpolant":
        from ..emulators.interpolant import StochasticInterpolantEmulator

        return StochasticInterpolantEmulator.__init__
    return DiffusionEmulator.__init__


def parse_config(raw: Any) -> ExperimentConfig:
    """Validates a mapping (e.g. parsed YAML) into an :class:`ExperimentConfig`."""
    from ..systems.datasets import SYSTEMS
    from .l63 import SHIPPED_FAMILIES, has_shipped, shipped_systems

    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of fields, got {type(raw).__name__}")
    _unknown(raw, _TOP, "")
    setup = raw.get("setup")
    if setup is not None:
        from .setups import SETUPS

        if not isinstance(setup, str) or setup not in SETUPS:
            _fail("setup", f"must be one of {sorted(SETUPS)}", setup)
        raw = {**SETUPS[setup].fields(), **raw}
    name = raw.get("name", "experiment")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        _fail("name", "must be a non-empty string without spaces or slashes", name)
    system = _choice(raw, "system", "", sorted(SYSTEMS))
    system_options = _mapping(raw, "system_options", "")
    _check_option_types(system_options, SYSTEMS[system].cls.__init__, "system_options")
    try:
        SYSTEMS[system](**system_options)
    except (TypeError, ValueError) as exc:
        _fail(field_of(exc, system_options, "system_options"), f"{system} cannot be built: {exc}")
    emulator = raw.get("emulator", "shipped")
    if emulator is True:  # YAML reads an unquoted `true` as a boolean
        emulator = "true"
    if not isinstance(emulator, str) or not emulator:
        _fail(
            "emulator",
            "must be 'shipped', 'shipped-interpolant', 'true', 'oracle' or a checkpoint path",
            emulator,
        )
    family = SHIPPED_FAMILIES.get(emulator)
    if family is not None and not has_shipped(system, family):
        _fail(
            "emulator",
            f"no {emulator} emulator for {system!r} (shipped for: "
            f"{', '.join(shipped_systems(family))}); use 'true' or a checkpoint path",
            emulator,
        )
    if emulator not in SPECIAL_EMULATORS and not Path(emulator).is_file():
        _fail("emulator", "checkpoint file not found", emulator)
    emulator_options = _mapping(raw, "emulator_options", "")
    if emulator == "true" and emulator_options:
        _fail("emulator_options", "the true model takes no sampling options", emulator_options)
    if emulator == "oracle":
        from ..emulators.oracle import ImportanceSampledEmulator

        _check_option_types(
            emulator_options,
            ImportanceSampledEmulator.__init__,
            "emulator_options",
            skip=("self", "emulator"),
        )
    else:
        _check_option_types(
            emulator_options,
            _emulator_parameters(emulator),
            "emulator_options",
            skip=(
                "self",
                "denoiser",
                "velocity",
                "interpolant",
                "state_shape",
                "mean",
                "std",
                "residual",
                "residual_std",
            ),
        )

    o = _section(raw, "observations", {"operator", "indices", "stride", "factor", "noise_std"})
    operator = _choice(o, "operator", "observations.", OPERATORS, "select")
    indices = o.get("indices")
    if operator == "select":
        if (
            not isinstance(indices, list)
            or not indices
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices)
        ):
            _fail(
                "observations.indices",
                "must be a non-empty list of non-negative integers for operator 'select'",
                indices,
            )
        indices = tuple(indices)
    elif indices is not None:
        _fail(
            "observations.indices",
            f"is only used by operator 'select' (operator is {operator!r})",
            indices,
        )
    obs = ObservationConfig(
        operator=operator,
        indices=indices,
        stride=_int(o, "stride", "observations.", 1, minimum=1),
        noise_std=_float(o, "noise_std", "observations.", 0.25, positive=True),
        factor=_int(o, "factor", "observations.", 1, minimum=1),
    )
    for key, used_by in (("stride", "subsample"), ("factor", "coarsen")):
        if o.get(key, 1) != 1 and operator != used_by:
            _fail(
                f"observations.{key}",
                f"is only used by operator {used_by!r} (operator is {operator!r})",
                o[key],
            )

    i = _section(raw, "initial", {"recipe", "std", "spinup"})
    initial = InitialConfig(
        recipe=_choice(i, "recipe", "initial.", RECIPES, "perturbed"),
        std=_float(i, "std", "initial.", 0.0, minimum=0.0),
        spinup=_float(i, "spinup", "initial.", 10.0, minimum=0.0),
    )

    if "filter" not in raw:
        _fail("filter", "is required (method, particles, options)")
    f = _section(raw, "filter", {"method", "particles", "options"})
    method = _choice(f, "method", "filter.", METHODS)
    options = _mapping(f, "options", "filter.")
    params = inspect.signature(filter_class(method).__init__).parameters
    allowed = {p for p in params if p not in ("self", "emulator", "generator")}
    allowed |= set(WRAPPER_OPTIONS.get(method, ()))
    for key in options:
        if key not in allowed:
            _fail(
                f"filter.options.{key}", f"is not an option of {method}; options: {sorted(allowed)}"
            )
    wrapper = {k: v for k, v in options.items() if k in WRAPPER_OPTIONS.get(method, ())}
    for key, value in wrapper.items():
        if key in ("jitter_shrink", "jitter_adaptive"):
            if not isinstance(value, bool):
                _fail(f"filter.options.{key}", "must be true or false", value)
        elif (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            _fail(f"filter.options.{key}", "must be a finite number >= 0", value)
    if "jitter" in wrapper and "jitter_scale" in wrapper:
        _fail("filter.options.jitter_scale", "cannot be combined with filter.options.jitter")
    for key in ("jitter_radius", "jitter_shrink", "jitter_adaptive"):
        if key in wrapper and "jitter_scale" not in wrapper:
            _fail(f"filter.options.{key}", "needs filter.options.jitter_scale")
    if wrapper.get("jitter_adaptive") and wrapper.get("jitter_shrink"):
        _fail(
            "filter.options.jitter_adaptive", "cannot be combined with filter.options.jitter_shrink"
        )
    _check_option_types(
        {k: v for k, v in options.items() if k not in wrapper},
        filter_class(method).__init__,
        "filter.options",
        skip=("self", "emulator", "generator"),
    )
    filt = FilterConfig(
        method=method, particles=_int(f, "particles", "filter.", minimum=2), options=options
    )

    steps = _int(raw, "steps", "", 100, minimum=1)
    burn_in = _int(raw, "burn_in", "", 10, minimum=0)
    if burn_in >= steps:
        _fail("burn_in", f"must be smaller than steps ({steps})", burn_in)
    return ExperimentConfig(
        name=name,
        system=system,
        system_options=system_options,
        emulator=emulator,
        emulator_options=emulator_options,
        observations=obs,
        initial=initial,
        filter=filt,
        steps=steps,
        burn_in=burn_in,
        runs=_int(raw, "runs", "", 1, minimum=1),
        seed=_int(raw, "seed", "", 0, minimum=0),
        save=_choice(raw, "save", "", SAVES, "particles"),
        setup=setup,
        dtype=_choice(raw, "dtype", "", DTYPES, "float32"),
        predictive_check=_int(raw, "predictive_check", "", 0, minimum=0),
    )


def load_config(path: str | Path, **overrides: Any) -> ExperimentConfig:
    """Reads and validates a YAML config; ``overrides`` (``method``, ``particles``,
    ``steps``, ``runs``, ``seed``...) replace its values and are validated too."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise ConfigError(f"{path} is not valid YAML{at}") from None
    if raw is None:
        raise ConfigError(f"{path} is empty: a config needs at least 'system' and 'filter'")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of fields, got {type(raw).__name__}")
    cfg = parse_config(raw)
    return cfg.replace(**overrides) if any(v is not None for v in overrides.values()) else cfg
