r"""Validation of an emulator against the true model (``genfilter validate``; measured
results in docs/systems.md).

Two kinds of checks, both comparing the emulator with a known stochastic system:

* **one step**: from the same states :math:`x^k`, draw ``samples`` transitions from the
  emulator and from the true model; report the mean error (in units of the true
  transition's standard deviation), the variance ratios, and the energy distance between the
  two sample sets — next to the energy distance between two *independent* true-model sample
  sets of the same size, which is what a perfect emulator would score (its noise floor),
  each with its standard error over the states, and their difference paired by state (the
  unbiased estimator puts the floor's expectation at zero, so the difference, not a ratio
  to a floor near zero, is what can be compared across emulators);
  two variance ratios: the mean over components of :math:`s^2_{em} / s^2_{true}`, which a
  spread in the wrong place raises (too much where the truth is quiet weighs more than too
  little where it is active), reported next to the same statistic for two true sets (above
  1 by sampling alone: :math:`\mathbb{E}[1/s^2] > 1/\sigma^2`); and the total ratio
  :math:`\sum s^2_{em} / \sum s^2_{true}`, which measures the overall spread only;
* **free rollout**: run both from attractor states for a long time and compare the
  climatology (mean, standard deviation per component) and the autocorrelation at a few lags.

The energy distance of sample sets :math:`X, Y` is
:math:`2\,\mathbb{E}\|X - Y\| - \mathbb{E}\|X - X'\| - \mathbb{E}\|Y - Y'\|` (U-statistics
for the within-set terms), computed in units normalised by the true transition's standard
deviation so that components weigh equally.

References:
    | Energy Statistics: A Class of Statistics Based on Distances (Székely & Rizzo, 2013)
    | Journal of Statistical Planning and Inference 143, 1249-1272
"""

from __future__ import annotations

__all__ = ["energy_distance", "one_step_validation", "rollout_validation", "validation_table"]

from dataclasses import dataclass

import torch
from torch import Tensor

from .._utils import make_generator


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance between samples ``x (n, D)`` and ``y (m, D)`` (unbiased within-set terms)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be (n, D) and (m, D), got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    x, y = x.double(), y.double()
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("energy_distance needs at least 2 samples in each set")
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)


@dataclass
class OneStepResult:
    mean_error: float  # mean over states and components of |mean_em − mean_true| / sd_true
    variance_ratio: float  # mean over states and components of var_em / var_true
    # (for a deterministic true transition, var_true = 0: the ratio is then var_em over the
    #  squared state spread, i.e. the emulator's spurious spread relative to climatology)
    energy_distance_by_state: tuple[float, ...]  # emulator vs true model, state by state
    # true model vs independent true model, state by state
    energy_distance_floor_by_state: tuple[float, ...]
    # the same mean of per-component ratios for an independent true-model sample set: the
    # statistic's own bias (E[1/s^2] > 1/sigma^2) and spread for a perfect emulator
    variance_ratio_floor: float
    # mean over states of sum(var_em) / sum(var_true): the total spread, insensitive to
    # where over the components it sits
    total_variance_ratio: float
    states: int
    samples: int

    @property
    def energy_distance(self) -> float:
        """Mean over states of the emulator's energy distance to the true model."""
        return _mean_se(self.energy_distance_by_state)[0]

    @property
    def energy_distance_floor(self) -> float:
        """Mean over states of the energy distance between two true-model sets."""
        return _mean_se(self.energy_distance_floor_by_state)[0]

    @property
    def energy_distance_se(self) -> float:
        """Standard error of :attr:`energy_distance` over the states (NaN for one state)."""
        return _mean_se(self.energy_distance_by_state)[1]

    @property
    def energy_distance_floor_se(self) -> float:
        """Standard error of :attr:`energy_distance_floor` over the states."""
        return _mean_se(self.energy_distance_floor_by_state)[1]

    @property
    def excess_energy_distance(self) -> tuple[float, float]:
        """Mean over states of the emulator's energy distance minus the floor's, and its
        standard error (paired by state): what the emulator adds above sampling noise. The
        unbiased estimator makes the floor's own expectation zero, so a ratio to the floor
        is dominated by noise when the floor is small; this difference is not."""
        d = [
            a - b
            for a, b in zip(
                self.energy_distance_by_state, self.energy_distance_floor_by_state, strict=True
            )
        ]
        return _mean_se(d)


def _mean_se(values) -> tuple[float, float]:
    """Mean and standard error of ``values`` in float64 (the error NaN below 2 values)."""
    v = torch.tensor(list(values), dtype=torch.float64)
    se = float(v.std() / v.numel() ** 0.5) if v.numel() > 1 else float("nan")
    return float(v.mean()), se


def one_step_validation(
    emulator,
    system,
    states: Tensor,
    samples: int = 256,
    generator: torch.Generator | int | None = 0,
) -> OneStepResult:
    """Compares one emulator transition with the true model's from each of ``states (M, *S)``."""
    g = make_generator(generator)
    errs, ratios, eds, floors, ratio_floors, totals = [], [], [], [], [], []
    for x in states:
        xb = x.expand(samples, *x.shape).clone()
        true_a = system.step(xb, 1, g).flatten(1)
        true_b = system.step(xb, 1, g).flatten(1)
        em = (
            emulator.sample(
                xb.to(torch.get_default_dtype()) if not torch.is_floating_point(xb) else xb,
                generator=g,
            )
            .flatten(1)
            .to(true_a.dtype)
        )
        sd = true_a.std(0)
        # a deterministic transition (e.g. Lorenz-96 without model noise) has no spread:
        # then measure in units of the states' spread across the validation states
        floor_sd = (
            states.flatten(1).double().std(0).to(sd) if states.shape[0] > 1 else torch.ones_like(sd)
        )
        sd = torch.where(sd > 1e-6 * floor_sd, sd, floor_sd).clamp_min(1e-12)
        errs.append(((em.mean(0) - true_a.mean(0)).abs() / sd).mean())
        ratios.append((em.var(0) / sd**2).mean())
        ratio_floors.append((true_b.var(0) / sd**2).mean())
        totals.append(em.var(0).sum() / (sd**2).sum())
        eds.append(energy_distance(em / sd, true_a / sd))
        floors.append(energy_distance(true_b / sd, true_a / sd))
    return OneStepResult(
        mean_error=float(torch.stack(errs).mean()),
        variance_ratio=float(torch.stack(ratios).mean()),
        variance_ratio_floor=float(torch.stack(ratio_floors).mean()),
        total_variance_ratio=float(torch.stack(totals).mean()),
        states=int(states.shape[0]),
        samples=samples,
        energy_distance_by_state=tuple(float(e) for e in eds),
        energy_distance_floor_by_state=tuple(float(f) for f in floors),
    )


@dataclass
class RolloutResult:
    mean_true: Tensor
    mean_emulator: Tensor
    std_true: Tensor
    std_emulator: Tensor
    lags: list[int]
    acf_true: Tensor  # (lags, D)
    acf_emulator: Tensor
    finite: bool


def _acf(traj: Tensor, lags: list[int]) -> Tensor:
    """Autocorrelation per component of trajectories ``(T, N, D)``, averaged over N."""
    z = traj - traj.mean((0, 1))
    var = (z**2).mean((0, 1))
    out = []
    for lag in lags:
        out.append((z[lag:] * z[: z.shape[0] - lag]).mean((0, 1)) / var)
    return torch.stack(out)


def rollout_validation(
    emulator,
    system,
    states: Tensor,
    length: int = 500,
    lags: tuple[int, ...] = (1, 2, 5, 10),
    generator: torch.Generator | int | None = 0,
    progress: bool = False,
) -> RolloutResult:
    """Free rollouts of ``length`` snapshots from ``states (N, *S)`` with the emulator and
    the true model; climatology and autocorrelation per component."""
    from tqdm.auto import tqdm

    g = make_generator(generator)
    x_t, x_e = states.clone(), states.clone()
    traj_t, traj_e = [], []
    finite = True
    for _ in tqdm(range(length), disable=not progress, desc="rollout", unit="step"):
        x_t = system.step(x_t, 1, g)
        x_e = emulator.sample(x_e, generator=g)
        if not torch.isfinite(x_e).all():
            finite = False
            break
        traj_t.append(x_t.flatten(1))
        traj_e.append(x_e.flatten(1).to(x_t.dtype))
    T = torch.stack(traj_t)
    E = torch.stack(traj_e) if traj_e else T[:0]
    lags = [lag for lag in lags if lag < max(E.shape[0], 1)]
    return RolloutResult(
        mean_true=T.mean((0, 1)),
        mean_emulator=E.mean((0, 1)),
        std_true=T.std((0, 1)),
        std_emulator=E.std((0, 1)),
        lags=lags,
        acf_true=_acf(T, lags),
        acf_emulator=_acf(E, lags),
        finite=finite,
    )


def _pm(se: float) -> str:
    return "" if se != se else f" ± {se:.4f}"


def validation_table(one: OneStepResult, roll: RolloutResult | None = None) -> str:
    """A short markdown table of both validations."""
    excess, excess_se = one.excess_energy_distance
    lines = [
        "| one-step check | value |",
        "|---|---|",
        f"| states × samples | {one.states} × {one.samples} |",
        f"| mean error / true sd | {one.mean_error:.3f} |",
        f"| variance ratio emulator / true (mean over components) | {one.variance_ratio:.3f} |",
        f"| variance ratio true / true (same statistic, floor) | {one.variance_ratio_floor:.3f} |",
        f"| total variance ratio emulator / true | {one.total_variance_ratio:.3f} |",
        f"| energy distance emulator vs true (± s.e. over states) | {one.energy_distance:.4f}"
        f"{_pm(one.energy_distance_se)} |",
        f"| energy distance true vs true (floor) | {one.energy_distance_floor:.4f}"
        f"{_pm(one.energy_distance_floor_se)} |",
        f"| emulator minus floor, paired by state | {excess:.4f}{_pm(excess_se)} |",
    ]
    if roll is not None:
        lines += ["", "| rollout (per component) | true | emulator |", "|---|---|---|"]

        def fmt(t: Tensor) -> str:
            if t.numel() > 8:  # fields: summarise over grid points
                return f"{float(t.mean()):.3f} (mean over {t.numel()} components)"
            return ", ".join(f"{v:.2f}" for v in t.tolist())

        lines.append(f"| mean | {fmt(roll.mean_true)} | {fmt(roll.mean_emulator)} |")
        lines.append(f"| std | {fmt(roll.std_true)} | {fmt(roll.std_emulator)} |")
        for i, lag in enumerate(roll.lags):
            lines.append(
                f"| autocorrelation lag {lag} | {fmt(roll.acf_true[i])} | "
                f"{fmt(roll.acf_emulator[i])} |"
            )
        lines.append(f"| rollout stayed finite | yes | {'yes' if roll.finite else 'NO'} |")
    return "\n".join(lines)
