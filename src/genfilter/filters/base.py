r"""Ensembles, step reports, the filter protocol and the assimilation loop.

A filter is ``init(particles) -> Ensemble`` plus ``step(ensemble, obs) -> (Ensemble,
StepInfo)``; :func:`assimilate` is the loop over observations that approximates
:math:`p(x^k \mid y^{1:k})` for :math:`k = 1, \dots, K` (Savary, Rozet & Louppe 2026, §2.1;
docs/method.md#filtering-problem), recording per-step statistics and, when the truth is
known, the metrics of docs/method.md#metrics (the paper's App. C).
"""

from __future__ import annotations

__all__ = [
    "Ensemble",
    "StepInfo",
    "Filter",
    "FilterRun",
    "assimilate",
    "uniform_log_weights",
    "effective_sample_size",
    "check_particles",
    "check_finite",
    "TRACES",
    "ensemble_spread",
    "inflate",
    "check_inflation",
    "EnsembleFilter",
    "is_uniform",
]

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._utils import nonfinite_members
from ..observations import Observation
from .tempering import ess as effective_sample_size
from .weighting import WeightCollapseWarning


def uniform_log_weights(n: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Normalised uniform log-weights ``(n,)`` (each ``-log n``)."""
    return torch.full((n,), -math.log(n), dtype=dtype, device=device)


def check_particles(particles: Tensor, name: str = "particles", min_members: int = 2) -> Tensor:
    """Validates an ensemble tensor ``(N, *S)``: floating, finite, ``N >= min_members``."""
    if not torch.is_tensor(particles):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(particles).__name__}")
    if not torch.is_floating_point(particles):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {particles.dtype}")
    if particles.ndim < 2:
        raise ValueError(f"{name} must have shape (N, *state_shape), got {tuple(particles.shape)}")
    if particles.shape[0] < min_members:
        raise ValueError(
            f"{name} must hold at least {min_members} members, got N = {particles.shape[0]}"
        )
    bad = nonfinite_members(particles)
    if bad.numel():
        raise ValueError(
            f"{name} contains non-finite values in {bad.numel()} member(s), first indices "
            f"{bad[:5].tolist()}"
        )
    return particles


def check_finite(x: Tensor, what: str) -> Tensor:
    """Raises ``FloatingPointError`` naming ``what`` when ``x`` ``(N, *S)`` has NaN or
    ``±inf`` values (the count and first indices of the bad members)."""
    bad = nonfinite_members(x)
    if bad.numel():
        raise FloatingPointError(
            f"{what} has non-finite values (NaN or ±inf) in {bad.numel()} member(s), first "
            f"indices {bad[:5].tolist()}"
        )
    return x


def ensemble_spread(x: Tensor) -> float:
    """Square root of the mean (over components) unbiased member variance, ``(N, *S) -> float``."""
    return float(x.flatten(1).var(0, unbiased=True).mean().sqrt())


def check_inflation(inflation: Any, name: str = "inflation") -> float:
    """Validates a multiplicative inflation factor: a finite number >= 1."""
    if isinstance(inflation, bool) or not isinstance(inflation, (int, float)):
        try:
            inflation = float(inflation)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number, got {inflation!r}") from None
    value = float(inflation)
    if not (math.isfinite(value) and value >= 1.0):
        raise ValueError(f"{name} must be a finite number >= 1, got {inflation!r}")
    return value


def inflate(x: Tensor, factor: float) -> Tensor:
    """Multiplicative inflation about the ensemble mean, x_i ← x̄ + λ (x_i − x̄)
    (docs/method.md#baselines)."""
    if factor == 1.0:
        return x
    mean = x.mean(0, keepdim=True)
    return mean + factor * (x - mean)


@dataclass
class Ensemble:
    r"""A weighted ensemble :math:`\{x_i, w_i\}` (docs/method.md#filtering-problem).

    Attributes:
        particles: The members, shape ``(N, *S)``.
        log_weights: Normalised log-weights ``(N,)`` (``logsumexp == 0``); uniform after a
            FA-APF step.
        extra: Filter-specific state carried between steps (e.g. EnFF's previous analysis).
    """

    particles: Tensor
    log_weights: Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.log_weights.shape != self.particles.shape[:1]:
            raise ValueError(
                f"log_weights must have shape ({self.particles.shape[0]},), got "
                f"{tuple(self.log_weights.shape)}"
            )

    @property
    def size(self) -> int:
        return int(self.particles.shape[0])

    @property
    def weights(self) -> Tensor:
        return torch.softmax(self.log_weights.double(), 0)

    @property
    def ess(self) -> float:
        return effective_sample_size(self.log_weights)

    def mean(self) -> Tensor:
        """Weighted mean ``(*S)``."""
        w = self.weights.to(self.particles)
        return torch.einsum("n,n...->...", w, self.particles)

    def is_uniform(self) -> bool:
        return is_uniform(self.log_weights)


def is_uniform(log_weights: Tensor) -> bool:
    """Whether normalised log-weights ``(N,)`` are all ``-log N`` (``allclose``)."""
    n = log_weights.shape[0]
    return bool(torch.allclose(log_weights, torch.full_like(log_weights, -math.log(n))))


@dataclass
class StepInfo:
    """What one filter step reports (plain floats; every field goes into the run file).

    Attributes:
        ess: Effective sample size of the weights used at this step (``N`` for unweighted
            ensembles), after inflation.
        inflation: The likelihood inflation β (docs/method.md#inflation); ``1.0``: none.
        log_evidence: Estimate of :math:`\\log p(y^k \\mid y^{1:k-1})`, or ``None``.
        seconds: Wall time of the step.
        ess_untempered: ESS of the un-inflated weights (β = 1), weighted filters only.
        target_met: Whether the ESS reached its target interval (``None``: no ESS control
            at this step); ``False`` means weight collapse that inflation could not undo.
        bisection_iterations: Steps of the inflation bisection.
        unique_ancestors: Distinct ancestors drawn by resampling (``None``: no resampling).
        resampled: Whether the particles were resampled at this step.
        skipped_weights: FA-APF skipped the weights (all particles identical).
        spread_forecast, spread_analysis: Ensemble spread before and after the analysis
            (forecast–analysis filters).
        extra: Further filter-specific counters (scalars), e.g. EnSF's clipped scores.
    """

    ess: float
    inflation: float = 1.0
    log_evidence: float | None = None
    seconds: float = 0.0
    ess_untempered: float | None = None
    target_met: bool | None = None
    bisection_iterations: int = 0
    unique_ancestors: int | None = None
    resampled: bool = False
    skipped_weights: bool = False
    spread_forecast: float | None = None
    spread_analysis: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


TRACES = {
    "ess": ("effective sample size of the weights (after inflation)", "members"),
    "inflation": ("observation-covariance inflation beta (1: none)", "1"),
    "log_evidence": ("log-evidence increment log p(y^k | y^{1:k-1})", "nats"),
    "seconds": ("wall time of the step", "s"),
    "ess_untempered": ("effective sample size before inflation (beta = 1)", "members"),
    "target_met": (
        "1 if the ESS reached its target interval, 0 if not (weight collapse), "
        "NaN without ESS control",
        "1",
    ),
    "bisection_iterations": ("bisection steps of the inflation search", "1"),
    "unique_ancestors": ("distinct ancestors drawn by resampling", "members"),
    "resampled": ("1 if the particles were resampled at this step", "1"),
    "spread_forecast": ("ensemble spread of the forecast", "state units"),
    "spread_analysis": ("ensemble spread after the analysis", "state units"),
}
"""The typed :class:`StepInfo` fields recorded per step in a run file: name -> (long
name, units)."""


@runtime_checkable
class Filter(Protocol):
    """A filtering algorithm: ``init`` + ``step``; every filter of :mod:`genfilter.filters`
    satisfies it."""

    def init(self, particles: Tensor) -> Ensemble: ...

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]: ...


class EnsembleFilter:
    """Shared parts of the filters: ``init`` (validated members, uniform log-weights) and,
    for the forecast–analysis filters (docs/method.md#baselines), the step loop around an
    analysis map."""

    emulator: Any
    generator: torch.Generator
    shardable: bool = False
    """Whether the filter can split its particles across ``torch.distributed`` ranks
    (:mod:`genfilter.distributed`)."""
    sharding: Any = None
    """The :class:`~genfilter.distributed.ParticleShards` of a multi-process run (set by
    :func:`assimilate` for the run's duration), else ``None``."""

    def init(self, particles: Tensor) -> Ensemble:
        check_particles(particles)
        ens = Ensemble(particles.clone(), uniform_log_weights(particles.shape[0]))
        if self.sharding is not None:
            sl = self.sharding.local
            return Ensemble(ens.particles[sl].clone(), ens.log_weights[sl].clone())
        return ens

    def _emulator(self):
        """The emulator on this rank's particles (itself without sharding)."""
        if self.sharding is None:
            return self.emulator
        return self.sharding.emulator(self.emulator, self.generator)

    def _global(self, local: Tensor) -> Tensor:
        """All ranks' blocks of a per-particle tensor, in order (itself without sharding)."""
        return local if self.sharding is None else self.sharding.all_gather(local)

    def _local(self, full: Tensor) -> Tensor:
        """This rank's rows of a per-particle tensor ``(N, ...)`` (itself without sharding)."""
        return full if self.sharding is None else full[self.sharding.local]

    def _forecast_analysis_step(
        self, ensemble: Ensemble, obs: Observation | None, analysis, extra: dict | None = None
    ) -> tuple[Tensor, Tensor, StepInfo]:
        """Forecast every member with ``emulator.sample``, then, if ``obs`` has observed
        values, ``analysis(forecast, obs) -> (analysis, diagnostics)``.  Returns the
        forecast, the analysis and a StepInfo with the spread before and after the analysis
        (docs/method.md#ensemble-kalman-filters).

        Raises:
            FloatingPointError: the forecast has non-finite members (the analysis would
                spread them to every member).
        """
        t0 = time.perf_counter()
        check_particles(ensemble.particles, "ensemble.particles")
        xf = self.emulator.sample(ensemble.particles, generator=self.generator)
        check_finite(xf, f"{type(self).__name__}: the forecast")
        info_extra = dict(extra or {})
        reduced = obs.observed() if obs is not None else None
        if reduced is None or reduced.y.shape[0] == 0:
            xa = xf
        else:
            xa, diag = analysis(xf, reduced)
            info_extra.update(diag)
        info = StepInfo(
            ess=float(ensemble.size),
            inflation=1.0,
            seconds=time.perf_counter() - t0,
            spread_forecast=ensemble_spread(xf),
            spread_analysis=ensemble_spread(xa),
            extra=info_extra,
        )
        return xf, xa, info


@dataclass
class FilterRun:
    """The record of an assimilation run.

    Attributes:
        means, spreads: Per-step weighted ensemble mean and standard deviation, ``(K, *S)``.
        particles: Per-step members ``(K, N, *S)`` when ``save_particles`` was true.
        infos: One :class:`StepInfo` per step.
        metrics: Per-step metrics (``{name: (K,) or (K, V) tensor}``) when truth was given.
        truth: The truth ``(K, *S)`` when given.
        final: The ensemble after the last step (resume point).
    """

    means: Tensor
    spreads: Tensor
    infos: list[StepInfo]
    particles: Tensor | None = None
    log_weights: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)
    truth: Tensor | None = None
    final: Ensemble | None = None
    pit: Tensor | None = None

    @property
    def steps(self) -> int:
        return len(self.infos)

    @property
    def log_evidence(self) -> float:
        """Sum of the per-step log-evidence increments (NaN if a filter gives none)."""
        vals = [i.log_evidence for i in self.infos if i.log_evidence is not None]
        return float(sum(vals)) if vals else float("nan")

    def trace(self, name: str) -> Tensor:
        """Per-step trace ``(K,)`` of a StepInfo field (``ess``, ``inflation``,
        ``target_met``, ... — booleans as 0/1, ``None`` as NaN) or of a key of ``extra``."""
        out = []
        for info in self.infos:
            v = getattr(info, name) if hasattr(info, name) else info.extra.get(name)
            out.append(float("nan") if v is None else float(v))
        return torch.tensor(out, dtype=torch.float64)

    def summary(self, burn_in: int = 0) -> dict[str, float]:
        """Metrics averaged over steps ``burn_in..K-1`` (docs/method.md#metrics); SSR is
        the mean of the per-step ratios, as the paper does."""
        from ..metrics import summarize

        if not self.metrics:
            raise ValueError("this run has no metrics: pass truth= to assimilate()")
        return summarize(self.metrics, burn_in=burn_in)

    def to_xarray(self, state_dims: Sequence[str] | None = None, **kwargs):
        """This run as a run file dataset (:func:`genfilter.io.run_dataset`, one run);
        ``kwargs`` go to it (``observations=[obs]``, ``interval``, ``burn_in``, ``attrs``)."""
        from ..io import run_dataset

        if "observations" in kwargs and kwargs["observations"] is not None:
            kwargs["observations"] = [kwargs["observations"]]
        return run_dataset([self], state_dims=state_dims, **kwargs)


def _weighted_moments(ens: Ensemble) -> tuple[Tensor, Tensor]:
    w = ens.weights.to(ens.particles)
    mean = torch.einsum("n,n...->...", w, ens.particles)
    dev = ens.particles - mean
    n = ens.size
    # unbiased for uniform weights (the spread uses 1/(N-1), docs/method.md#skill-and-spread);
    # reliability weights otherwise
    denom = 1.0 - float((w.double() ** 2).sum())
    var = torch.einsum("n,n...->...", w, dev**2) / max(denom, 1e-300)
    if ens.is_uniform():
        var = (dev**2).sum(0) / (n - 1)
    return mean, var.sqrt()


def assimilate(
    filter: Filter,
    particles0: Tensor,
    observations: Sequence[Observation | None],
    truth: Tensor | None = None,
    *,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    save_particles: bool = True,
    variable_axis: int | None = None,
    desc: str | None = None,
    predictive_check: int = 0,
    predictive_seed: int = 0,
    distributed: Any = None,
) -> FilterRun:
    r"""Runs ``filter`` over ``observations`` (one filter step each; ``None`` = forecast
    only) from the initial members ``particles0`` ``(N, *S)``.

    Arguments:
        truth: The true states ``(K, *S)``; when given, per-step metrics are recorded
            (docs/method.md#metrics): skill, spread, SSR and CRPS, per variable along
            ``variable_axis`` if set, else over all components.
        checkpoint: A file; the run is saved there after every step and, if the file
            exists, resumed from it (the filter's generator state is restored, so the
            result is identical to an uninterrupted run).
        save_particles: Keep every step's members (``(K, N, *S)``) in the run; otherwise
            only means and spreads.
        predictive_check: If > 0, before each analysis draw this many samples of the
            one-step predictive of the observation and record its PIT values
            (:mod:`genfilter.filters.predictive`) in ``run.pit`` ``(K, M)``; the draws use
            their own generator (seeded with ``predictive_seed``), so particles and weights
            are the same as without the check.
        distributed: Split the particles across the ranks of the running
            ``torch.distributed`` process group (:mod:`genfilter.distributed`; FA-APF and the
            bootstrap PF): ``None`` (default) does so when a group of more than one rank
            runs and the filter can; ``True`` requires it; ``False`` runs every particle on
            every rank; or the :class:`~genfilter.distributed.ParticleShards` to use. The
            returned run is the same on every rank and, on CPU, bit-identical to one
            process; only rank 0 writes the checkpoint and shows the progress bar.
    """
    from ..distributed import barrier, is_distributed, is_main

    check_particles(particles0, "particles0")
    shards = _sharding(filter, particles0.shape[0], distributed)
    if is_distributed():
        barrier()  # no rank writes the checkpoint before every rank has read it
    options = dict(
        progress=progress,
        checkpoint=checkpoint,
        save_particles=save_particles,
        variable_axis=variable_axis,
        desc=desc,
        predictive_check=predictive_check,
        predictive_seed=predictive_seed,
    )
    if shards is None:
        return _assimilate(filter, particles0, observations, truth, None, is_main(), **options)
    filter.sharding = shards  # for this run only
    try:
        return _assimilate(filter, particles0, observations, truth, shards, is_main(), **options)
    finally:
        filter.sharding = None


def _sharding(filter, n: int, distributed):
    """The :class:`~genfilter.distributed.ParticleShards` of a run, or ``None``."""
    from ..distributed import ParticleShards, is_distributed, is_main

    name = type(filter).__name__
    shardable = bool(getattr(filter, "shardable", False))
    if distributed is None:
        if not is_distributed():
            return None
        if not shardable:
            if is_main():
                warnings.warn(
                    f"{name} does not split its particles across processes: every rank runs "
                    f"all {n} of them",
                    stacklevel=3,
                )
            return None
        return ParticleShards(n)
    if distributed is False:
        return None
    if distributed is True or isinstance(distributed, ParticleShards):
        if not shardable:
            raise TypeError(
                f"distributed: {name} cannot split its particles across processes (FA-APF "
                "and the bootstrap PF can)"
            )
        shards = ParticleShards(n) if distributed is True else distributed
        if shards.n != n:
            raise ValueError(f"distributed: the shards are for N = {shards.n}, particles0 has {n}")
        return shards
    raise TypeError(
        f"distributed must be None, a bool or a ParticleShards, got {type(distributed).__name__}"
    )


def _assimilate(
    filter,
    particles0: Tensor,
    observations,
    truth: Tensor | None,
    shards,
    main: bool,
    *,
    progress: bool,
    checkpoint,
    save_particles: bool,
    variable_axis: int | None,
    desc: str | None,
    predictive_check: int,
    predictive_seed: int,
) -> FilterRun:
    """The loop of :func:`assimilate`; ``shards``: this rank's
    :class:`~genfilter.distributed.ParticleShards` (``None``: every particle here),
    ``main``: whether this process writes the checkpoint and shows progress."""
    from ..metrics import step_metrics

    def gathered(e: Ensemble) -> Ensemble:
        if shards is None:
            return e
        return Ensemble(shards.all_gather(e.particles), shards.all_gather(e.log_weights))

    K = len(observations)
    if truth is not None:
        bad = ~torch.isfinite(truth.reshape(truth.shape[0], -1)).all(1)
        if bool(bad.any()):
            raise ValueError(
                f"truth has non-finite values (NaN or ±inf) at step(s) "
                f"{(bad.nonzero().flatten() + 1)[:5].tolist()}"
            )
        if truth.shape[0] != K or tuple(truth.shape[1:]) != tuple(particles0.shape[1:]):
            raise ValueError(
                f"truth must have shape ({K}, {', '.join(map(str, particles0.shape[1:]))}) "
                f"to match {K} observations, got {tuple(truth.shape)}"
            )

    start = 0
    means: list[Tensor] = []
    spreads: list[Tensor] = []
    parts: list[Tensor] = []
    lws: list[Tensor] = []
    infos: list[StepInfo] = []
    metric_rows: list[dict[str, Tensor]] = []
    pits: list[Tensor] = []
    ens: Ensemble | None = None
    pgen = torch.Generator().manual_seed(int(predictive_seed)) if predictive_check else None

    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(ckpt, weights_only=True)
            state["step"], state["particles"], state["infos"]
        except Exception as exc:
            raise ValueError(
                f"{ckpt} is not a readable run checkpoint ({type(exc).__name__}); delete it "
                "to restart this run"
            ) from None
        start = int(state["step"])
        ens = Ensemble(state["particles"], state["log_weights"])
        if shards is not None:
            ens = Ensemble(ens.particles[shards.local], ens.log_weights[shards.local])
        means, spreads = list(state["means"]), list(state["spreads"])
        parts, lws = list(state["saved_particles"]), list(state["saved_log_weights"])
        infos = [StepInfo(**i) for i in state["infos"]]
        metric_rows = list(state["metric_rows"])
        pits = list(state.get("pits", []))
        if pgen is not None and "predictive_generator" in state:
            pgen.set_state(state["predictive_generator"])
        gen = getattr(filter, "generator", None)
        if gen is not None and "generator" in state:
            gen.set_state(state["generator"])
    if ens is None:
        ens = filter.init(particles0)
    full = gathered(ens)  # the whole ensemble (ens: this rank's block when sharded)

    bar = tqdm(
        range(start, K),
        desc=desc or type(filter).__name__,
        disable=not (progress and main),
        unit="step",
        initial=start,
        total=K,
    )
    name = type(filter).__name__
    warned = any(i.target_met is False for i in infos)
    for k in bar:
        t0 = time.perf_counter()
        where = f"{name} at step {k + 1} of {K}"
        if pgen is not None:
            pits.append(_pit(filter, full, observations, k, pgen, predictive_check))
        try:
            ens, info = filter.step(ens, observations[k])
            full = gathered(ens)
        except FloatingPointError as exc:
            raise FloatingPointError(f"{where}: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        info.seconds = time.perf_counter() - t0
        check_finite(full.particles, f"{where}: the analysis ensemble")
        if info.target_met is False and not warned and main:
            warned = True
            warnings.warn(
                f"{where}: the ESS target was not met even at the smallest inflation (ESS "
                f"{info.ess:.1f} of {full.size} members, inflation {info.inflation:.3g}): weight "
                "collapse; every such step is recorded as target_met = 0 in the run",
                WeightCollapseWarning,
                stacklevel=2,
            )
        mean, spread = _weighted_moments(full)
        means.append(mean)
        spreads.append(spread)
        if save_particles:
            parts.append(full.particles.clone())
            lws.append(full.log_weights.clone())
        infos.append(info)
        if truth is not None:
            metric_rows.append(
                step_metrics(
                    full.particles, truth[k], full.log_weights, variable_axis=variable_axis
                )
            )
            if progress and main:
                bar.set_postfix(
                    skill=f"{float(metric_rows[-1]['skill'].mean()):.3f}", ess=f"{info.ess:.0f}"
                )
        if ckpt is not None and main:
            _save_checkpoint(
                ckpt,
                k + 1,
                full,
                means,
                spreads,
                parts,
                lws,
                infos,
                metric_rows,
                getattr(filter, "generator", None),
                pits,
                pgen,
            )
    bar.close()

    metrics: dict[str, Tensor] = {}
    if metric_rows:
        for name in metric_rows[0]:
            metrics[name] = torch.stack([row[name] for row in metric_rows])
    return FilterRun(
        means=torch.stack(means) if means else particles0[:0, ...].mean(0, keepdim=True)[:0],
        spreads=torch.stack(spreads) if spreads else particles0[:0],
        infos=infos,
        particles=torch.stack(parts) if parts else None,
        log_weights=torch.stack(lws) if lws else None,
        metrics=metrics,
        truth=truth,
        final=full,
        pit=torch.stack(pits) if pits else None,
    )


def _pit(filter, ens: Ensemble, observations, k: int, generator, samples: int) -> Tensor:
    """PIT values of observation ``k`` under the filter's one-step predictive (NaN for a
    step without observation)."""
    from .predictive import predictive_pit

    obs = observations[k]
    if obs is None:
        M = next(o.y.shape[0] for o in observations if o is not None)
        return torch.full((M,), float("nan"), dtype=torch.float64)
    return predictive_pit(filter.emulator, ens.particles, ens.log_weights, obs, generator, samples)


def _info_dict(info: StepInfo) -> dict[str, Any]:
    out = {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name != "extra"}
    out["extra"] = {
        k: v
        for k, v in info.extra.items()
        if isinstance(v, (int, float, bool, str)) or torch.is_tensor(v)
    }
    return out


def _save_checkpoint(
    path: Path,
    step,
    ens,
    means,
    spreads,
    parts,
    lws,
    infos,
    metric_rows,
    generator,
    pits=(),
    predictive_generator=None,
) -> None:
    state = {
        "step": step,
        "particles": ens.particles,
        "log_weights": ens.log_weights,
        "means": means,
        "spreads": spreads,
        "saved_particles": parts,
        "saved_log_weights": lws,
        "infos": [_info_dict(i) for i in infos],
        "metric_rows": metric_rows,
        "pits": list(pits),
    }
    if predictive_generator is not None:
        state["predictive_generator"] = predictive_generator.get_state()
    if generator is not None:
        state["generator"] = generator.get_state()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written checkpoint
