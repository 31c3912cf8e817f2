r"""Ensemble verification metrics: skill, spread, SSR, CRPS, energy score, ranks
(Savary, Rozet & Louppe 2026, App. C; docs/method.md#metrics).

Every filter is scored by the same functions (the paper's App. C; DAPPER's habit). An ensemble is
a tensor ``(N, *S)`` (members first), the truth a tensor ``(*S)``, and a weighted ensemble
(particle filter) carries normalised log-weights ``(N,)``; ``None`` means uniform weights.
All computations run in float64 and every result is a float64 tensor (ranks: int64).

Per step, a metric is either a scalar (mean over all state components) or, with
``variable_axis=a`` (an axis of the *state*, i.e. axis ``a + 1`` of the particles), one value
per variable ``(S[a],)`` averaged over the other state axes (e.g. per channel of a field
``(C, H, W)``, or per component of a Lorenz-63 state ``(3,)``). Averages over grid points are
plain means (no latitude weighting, as in the official code). :func:`summarize` then averages
per-step values over steps, the SSR as the mean of per-step ratios (as the paper does).

References:
    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028

    | Strictly Proper Scoring Rules, Prediction, and Estimation (Gneiting & Raftery, 2007)
    | https://doi.org/10.1198/016214506000001437

    | Fair Scores for Ensemble Forecasts (Ferro, 2014)
    | Quarterly Journal of the Royal Meteorological Society 140, 1917-1923

    | Why Should Ensemble Spread Match the RMSE of the Ensemble Mean? (Fortin et al., 2014)
    | Journal of Hydrometeorology 15, 1708-1713

    | Interpretation of Rank Histograms for Verifying Ensemble Forecasts (Hamill, 2001)
    | Monthly Weather Review 129, 550-560
"""

from __future__ import annotations

__all__ = [
    "ensemble_mean",
    "skill",
    "spread",
    "ssr",
    "crps",
    "energy_score",
    "rank",
    "rank_histogram",
    "step_metrics",
    "summarize",
]

import math

import torch
from torch import Tensor

from ._utils import chunks

# Largest number of float64 entries an energy-score chunk of pairwise differences may hold
# (chunk * N * D): 2**22 entries = 32 MiB.
_PAIRWISE_BUDGET = 2**22


# --------------------------------------------------------------------------------------------
# Validation and shared pieces
# --------------------------------------------------------------------------------------------


def _check_particles(particles: Tensor) -> Tensor:
    """Validates an ensemble ``(N, *S)`` with ``N >= 2``; returns it in float64."""
    if not torch.is_tensor(particles):
        raise TypeError(f"particles must be a torch.Tensor, got {type(particles).__name__}")
    if particles.ndim < 1:
        raise ValueError("particles must have shape (N, *state_shape), got a 0-d tensor")
    if particles.shape[0] < 2:
        raise ValueError(
            f"particles must hold at least 2 members (N >= 2), got shape {tuple(particles.shape)}"
        )
    return particles.to(torch.float64)


def _check_truth(truth: Tensor, x: Tensor) -> Tensor:
    """Validates the truth ``(*S)`` against particles ``(N, *S)``; returns it in float64."""
    y = torch.as_tensor(truth, dtype=torch.float64, device=x.device)
    if y.shape != x.shape[1:]:
        raise ValueError(
            f"truth must have the state shape of particles[1:] = {tuple(x.shape[1:])}, "
            f"got truth shape {tuple(y.shape)} (particles shape {tuple(x.shape)})"
        )
    return y


def _check_weights(log_weights: Tensor | None, x: Tensor) -> Tensor | None:
    """Normalised weights ``(N,)`` from log-weights (re-normalised), or None when uniform."""
    if log_weights is None:
        return None
    lw = torch.as_tensor(log_weights, dtype=torch.float64, device=x.device)
    n = x.shape[0]
    if lw.shape != (n,):
        raise ValueError(f"log_weights must have shape (N,) = ({n},), got {tuple(lw.shape)}")
    if torch.isnan(lw).any() or (lw == math.inf).any():
        raise ValueError("log_weights must not contain NaN or +inf")
    if (lw == -math.inf).all():
        raise ValueError("log_weights are all -inf: no member has positive weight")
    return torch.softmax(lw, dim=0)


def _check_axis(variable_axis: int | None, state_ndim: int) -> int | None:
    """Normalises ``variable_axis`` (an axis of the state, negative allowed) or None."""
    if variable_axis is None:
        return None
    if isinstance(variable_axis, bool) or not isinstance(variable_axis, int):
        raise TypeError(f"variable_axis must be an int or None, got {type(variable_axis).__name__}")
    if not -state_ndim <= variable_axis < state_ndim:
        raise ValueError(
            f"variable_axis={variable_axis} is out of range for a state with {state_ndim} "
            f"axes (valid: {-state_ndim}..{state_ndim - 1}, an axis of particles[1:])"
        )
    return variable_axis % state_ndim


def _component_mean(values: Tensor, axis: int | None) -> Tensor:
    """Mean of per-component values ``(*S)``: over all (scalar) or per variable ``(S[axis],)``."""
    if axis is None:
        return values.mean()
    return values.movedim(axis, 0).reshape(values.shape[axis], -1).mean(dim=1)


def _mean(x: Tensor, w: Tensor | None) -> Tensor:
    """(Weighted) ensemble mean ``(*S)`` of float64 particles ``(N, *S)``."""
    if w is None:
        return x.mean(dim=0)
    return torch.tensordot(w, x, dims=1)


def _variance(x: Tensor, w: Tensor | None) -> Tensor:
    r"""Unbiased per-component ensemble variance ``(*S)``.

    Uniform: :math:`\frac{1}{N-1}\sum_i (x_i - \bar x)^2`. Weighted: reliability weights,
    :math:`\sum_i w_i (x_i - \bar x)^2 / (1 - \sum_i w_i^2)`.
    """
    if w is None:
        return x.var(dim=0, correction=1)
    dev2 = (x - _mean(x, w)) ** 2
    num = torch.tensordot(w, dev2, dims=1)
    # 1 - sum_i w_i^2 = sum_i w_i (W - w_i) with W = sum_i w_i. When one weight is close to 1,
    # W - w_max cancels catastrophically, so it is summed over the other members instead.
    others = w.sum() - w
    imax = int(torch.argmax(w))
    others[imax] = torch.cat([w[:imax], w[imax + 1 :]]).sum()
    den = (w * others).sum()
    if den <= 0:
        # A single member carries all the weight: its spread is zero (num is exactly 0 too).
        return torch.zeros_like(num)
    return num / den


def _crps_components(x: Tensor, y: Tensor, w: Tensor | None, fair: bool) -> Tensor:
    r"""Per-component ensemble CRPS ``(*S)`` in O(N log N) by sorting (no N x N matrix).

    For members sorted along the ensemble axis, :math:`\sum_{ij} w_i w_j |x_i - x_j| =
    2 \sum_k w_{(k)} x_{(k)} (C_k + C_{k-1} - W)` with cumulative weights :math:`C_k` and total
    :math:`W`; uniform weights give :math:`\frac{2}{N^2} \sum_k (2k - N - 1) x_{(k)}`.
    """
    n = x.shape[0]
    # The coefficients of the sorted sum add up to zero, so any per-component shift leaves
    # the result unchanged; centring reduces cancellation for large offsets.
    centre = x.mean(dim=0)
    xc, yc = x - centre, y - centre
    xs, order = torch.sort(xc, dim=0)
    shape = (n,) + (1,) * (x.ndim - 1)
    if w is None:
        term1 = (xc - yc).abs().mean(dim=0)
        k = torch.arange(1, n + 1, dtype=x.dtype, device=x.device).reshape(shape)
        pair_sum = 2.0 * ((2.0 * k - n - 1.0) * xs).sum(dim=0)  # sum_ij |x_i - x_j|
        denom = 2.0 * n * (n - 1) if fair else 2.0 * n * n
        return term1 - pair_sum / denom
    term1 = torch.tensordot(w, (xc - yc).abs(), dims=1)
    ws = w.reshape(shape).expand_as(xc).gather(0, order)
    cum = torch.cumsum(ws, dim=0)
    total = cum[-1:]
    pair_sum = 2.0 * (ws * xs * (2.0 * cum - ws - total)).sum(dim=0)  # sum_ij w_i w_j |x_i - x_j|
    return term1 - 0.5 * pair_sum


# --------------------------------------------------------------------------------------------
# Public metrics
# --------------------------------------------------------------------------------------------


def ensemble_mean(particles: Tensor, log_weights: Tensor | None = None) -> Tensor:
    r"""(Weighted) ensemble mean (docs/method.md#skill-and-spread).

    .. math:: \bar x = \sum_i w_i x_i \qquad (w_i = 1/N \text{ when unweighted})

    Arguments:
        particles: The ensemble ``(N, *S)``, ``N >= 2``.
        log_weights: Normalised log-weights ``(N,)`` or None (uniform).

    Returns:
        The mean ``(*S)``, float64.
    """
    x = _check_particles(particles)
    return _mean(x, _check_weights(log_weights, x))


def skill(
    particles: Tensor,
    truth: Tensor,
    log_weights: Tensor | None = None,
    *,
    variable_axis: int | None = None,
) -> Tensor:
    r"""Skill: RMSE of the (weighted) ensemble mean against the truth (Savary et al. 2026,
    App. C.1; docs/method.md#skill-and-spread).

    .. math:: \mathrm{skill} = \sqrt{\frac{1}{D} \sum_d (\bar x_d - x^*_d)^2}

    Arguments:
        particles: The ensemble ``(N, *S)``, ``N >= 2``.
        truth: The true state ``(*S)``.
        log_weights: Normalised log-weights ``(N,)`` or None (uniform).
        variable_axis: None for the mean over all components (scalar), or an axis ``a`` of
            the state for one value per variable ``(S[a],)`` (mean over the other axes).

    Returns:
        A float64 scalar tensor, or ``(S[a],)``.
    """
    x = _check_particles(particles)
    y = _check_truth(truth, x)
    w = _check_weights(log_weights, x)
    axis = _check_axis(variable_axis, x.ndim - 1)
    return _component_mean((_mean(x, w) - y) ** 2, axis).sqrt()


def spread(
    particles: Tensor,
    log_weights: Tensor | None = None,
    *,
    variable_axis: int | None = None,
) -> Tensor:
    r"""Spread: root mean (over components) of the unbiased ensemble variance (Savary et al.
    2026, App. C.2, Eq. 36; docs/method.md#skill-and-spread).

    .. math:: \mathrm{spread} =
        \sqrt{\frac{1}{D} \sum_d \frac{1}{N-1} \sum_i (x_{i,d} - \bar x_d)^2}

    Weighted ensembles use the reliability-weights unbiased variance
    :math:`\sum_i w_i (x_{i,d} - \bar x_d)^2 / (1 - \sum_i w_i^2)`, equal to the above for
    uniform weights; it is set to 0 when one member carries all the weight.

    Arguments:
        particles: The ensemble ``(N, *S)``, ``N >= 2``.
        log_weights: Normalised log-weights ``(N,)`` or None (uniform).
        variable_axis: None (scalar) or an axis ``a`` of the state (values ``(S[a],)``).

    Returns:
        A float64 scalar tensor, or ``(S[a],)``.
    """
    x = _check_particles(particles)
    w = _check_weights(log_weights, x)
    axis = _check_axis(variable_axis, x.ndim - 1)
    return _component_mean(_variance(x, w), axis).sqrt()


def ssr(
    particles: Tensor,
    truth: Tensor,
    log_weights: Tensor | None = None,
    *,
    variable_axis: int | None = None,
    fortin: bool = False,
) -> Tensor:
    r"""Spread–skill ratio of one step (Savary et al. 2026, App. C.3; docs/method.md#ssr):
    1 is calibrated, < 1 over-confident.

    .. math:: \mathrm{SSR} = \frac{\mathrm{spread}}{\mathrm{skill}}
        \quad \Bigl(\times \sqrt{\tfrac{N+1}{N}} \text{ with } \texttt{fortin=True}\Bigr)

    The optional factor is the finite-ensemble correction of Fortin et al. (2014), with
    ``N`` the number of members (also for weighted ensembles). A zero skill gives inf/nan.

    Arguments:
        particles: The ensemble ``(N, *S)``, ``N >= 2``.
        truth: The true state ``(*S)``.
        log_weights: Normalised log-weights ``(N,)`` or None (uniform).
        variable_axis: None (scalar) or an axis ``a`` of the state (values ``(S[a],)``).
        fortin: Whether to multiply the spread by :math:`\sqrt{(N+1)/N}`.

    Returns:
        A float64 scalar tensor, or ``(S[a],)``.
    """
    x = _check_particles(particles)
    y = _check_truth(truth, x)
    w = _check_weights(log_weights, x)
    axis = _check_axis(variable_axis, x.ndim - 1)
    sprd = _component_mean(_variance(x, w), axis).sqrt()
    if fortin:
        n = x.shape[0]
        sprd = sprd * math.sqrt((n + 1) / n)
    return sprd / _component_mean((_mean(x, w) - y) ** 2, axis).sqrt()


def crps(
    particles: Tensor,
    truth: Tensor,
    log_weights: Tensor | None = None,
    *,
    fair: bool = False,
    variable_axis: int | None = None,
) -> Tensor:
    r"""Ensemble CRPS, energy form (Savary et al. 2026, App. C.4, Eq. 37; Gneiting & Raftery
    2007; docs/method.md#crps), averaged over components.

    .. math:: \mathrm{CRPS}_d = \frac{1}{N} \sum_i |x_{i,d} - x^*_d|
        - \frac{1}{2N^2} \sum_{i,j} |x_{i,d} - x_{j,d}|

    ``fair=True`` uses :math:`\frac{1}{2N(N-1)}` in the second term (Ferro 2014). Weighted ensembles use
    :math:`\sum_i w_i |x_{i,d} - x^*_d| - \frac12 \sum_{i,j} w_i w_j |x_{i,d} - x_{j,d}|`
    (the fair form is not defined for them). The pairwise term is computed in
    O(N log N) per component by sorting, never as an N x N matrix. Matches
    ``scoringrules.crps_ensemble(..., estimator="nrg")`` (``"fair"`` for ``fair=True``).

    Arguments:
        particles: The ensemble ``(N, *S)``, ``N >= 2``.
        truth: The true state ``(*S)``.
        log_weights: Normalised log-weights ``(N,)`` or None (uniform).
        fair: Whether to use the fair estimator (uniform weights only).
        variable_axis: None (scalar) or an axis ``a`` of the state (values ``(S[a],)``).

    Returns:
        A float64 scalar tensor, or ``(S[a],)``.
    """
    x = _check_particles(particles)
    y = _check_truth(truth, x)
    w = _check_weights(log_weights, x)
    axis = _check_axis(variable_axis, x.ndim - 1)
    if fair and w is not None:
        raise ValueError("fair=True is not defined for weighted ensembles (log_weights given)")
    return _component_mean(_crps_components(x, y, w, fair), axis)


def energy_score(
    particles: Tensor,
    truth: Tensor,
    log_weights: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Energy score over all state components (Gneiting & Raftery 2007; beyond the paper;
    docs/method.md#energy-score).

    .. math:: \mathrm{ES} = \frac{1}{N} \sum_i \|x_i - x^*\|
        - \frac{1}{2N^2} \sum_{i,j} \|x_i - x_j\|

    with :math:`\|\cdot\|` the Euclidean norm over the ``D = prod(S)`` components; weighted:
    :math:`\sum_i w_i \|x_i - x^*\| - \frac12 \sum_{i,j} w_i w_j \|x_i - x_j\|`. For
    ``D = 1`` it equals the CRPS. Matches ``scoringrules.es_ensemble(..., estimator="nrg")``.
    The pairwise term is computed by blocks of ``chunk_size`` members, so that memory stays
    O(chunk_size * N * D) (time is O(N^2 D)).

    Arguments:
        particles: The ensemble ``(N, *S)``, ``N >= 2``.
        truth: The true state ``(*S)``.
        log_weights: Normalised log-weights ``(N,)`` or None (uniform).
        chunk_size: Members per block of the pairwise term; None picks one that keeps a
            block under 2**22 entries.

    Returns:
        A float64 scalar tensor.
    """
    x = _check_particles(particles)
    y = _check_truth(truth, x)
    w = _check_weights(log_weights, x)
    n = x.shape[0]
    xf = x.reshape(n, -1)
    d = xf.shape[1]
    centre = xf.mean(dim=0)  # distances are shift-invariant; centring helps precision
    xf, yf = xf - centre, y.reshape(-1) - centre
    if chunk_size is None:
        chunk_size = max(1, _PAIRWISE_BUDGET // max(1, n * d))
    err = (xf - yf).norm(dim=1)  # (N,)
    term1 = err.mean() if w is None else w @ err
    pair = x.new_zeros(())
    for block in chunks(n, chunk_size):
        dist = torch.cdist(xf[block], xf, compute_mode="donot_use_mm_for_euclid_dist")
        pair = pair + (dist.sum() / (n * n) if w is None else w[block] @ dist @ w)
    return term1 - 0.5 * pair


def rank(particles: Tensor, truth: Tensor) -> Tensor:
    r"""Rank of the truth within the ensemble, per component (rank histograms, Hamill 2001;
    docs/method.md#rank-histogram).

    .. math:: r_d = \#\{ i : x_{i,d} < x^*_d \} \in \{0, \dots, N\}

    Ties count as not below (strictly-less count; no random tie-breaking).

    Arguments:
        particles: The ensemble ``(N, *S)``, ``N >= 2``.
        truth: The true state ``(*S)``.

    Returns:
        Ranks ``(*S)``, int64.
    """
    x = _check_particles(particles)
    y = _check_truth(truth, x)
    return (x < y).sum(dim=0, dtype=torch.int64)


def rank_histogram(ranks: Tensor, n_members: int) -> Tensor:
    r"""Rank histogram: counts of each rank ``0..N`` over all entries of ``ranks`` (Hamill
    2001; docs/method.md#rank-histogram).

    A calibrated ensemble gives a flat histogram; a U shape means under-dispersion.

    Arguments:
        ranks: Integer ranks of any shape (e.g. stacked outputs of :func:`rank`), in
            ``[0, n_members]``.
        n_members: The ensemble size ``N``.

    Returns:
        Counts ``(n_members + 1,)``, int64.
    """
    if isinstance(n_members, bool) or not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"n_members must be a positive int, got {n_members!r}")
    ranks = torch.as_tensor(ranks)
    if ranks.is_floating_point() or ranks.is_complex() or ranks.dtype == torch.bool:
        raise TypeError(f"ranks must be an integer tensor, got dtype {ranks.dtype}")
    flat = ranks.reshape(-1).to(torch.int64)
    if flat.numel() and (flat.min() < 0 or flat.max() > n_members):
        raise ValueError(
            f"ranks must lie in [0, n_members] = [0, {n_members}], got values in "
            f"[{int(flat.min())}, {int(flat.max())}]"
        )
    return torch.bincount(flat, minlength=n_members + 1)


def step_metrics(
    particles: Tensor,
    truth: Tensor,
    log_weights: Tensor | None = None,
    *,
    variable_axis: int | None = None,
) -> dict[str, Tensor]:
    r"""The per-step metrics of the paper's App. C: skill, spread, SSR (= spread / skill) and
    CRPS (docs/method.md#metrics).

    Arguments:
        particles: The ensemble ``(N, *S)``, ``N >= 2``.
        truth: The true state ``(*S)``.
        log_weights: Normalised log-weights ``(N,)`` or None (uniform).
        variable_axis: None (scalars) or an axis ``a`` of the state (values ``(S[a],)``).

    Returns:
        ``{"skill", "spread", "ssr", "crps"}``, each a float64 scalar tensor or ``(S[a],)``.
    """
    x = _check_particles(particles)
    y = _check_truth(truth, x)
    w = _check_weights(log_weights, x)
    axis = _check_axis(variable_axis, x.ndim - 1)
    skl = _component_mean((_mean(x, w) - y) ** 2, axis).sqrt()
    sprd = _component_mean(_variance(x, w), axis).sqrt()
    return {
        "skill": skl,
        "spread": sprd,
        "ssr": sprd / skl,
        "crps": _component_mean(_crps_components(x, y, w, fair=False), axis),
    }


def summarize(metrics: dict[str, Tensor], burn_in: int = 0) -> dict[str, float]:
    r"""Averages per-step metrics over steps ``burn_in..K-1`` and over variables
    (docs/method.md#metrics).

    Each metric is averaged as given; the SSR is therefore the mean over steps of the
    per-step ratio (as in the paper and the official code),

    .. math:: \mathrm{SSR} = \frac{1}{K'} \sum_k \frac{\mathrm{spread}_k}{\mathrm{skill}_k},

    not the ratio of means, which is returned as well as ``"ssr_of_means"`` (= mean spread /
    mean skill) when both ``"spread"`` and ``"skill"`` are present. If ``"ssr"`` is missing
    but both are present, it is computed from them step by step.

    Arguments:
        metrics: ``{name: (K,) or (K, V) tensor}`` of per-step values (e.g.
            :func:`step_metrics` outputs stacked over steps).
        burn_in: Number of initial steps to leave out, ``0 <= burn_in < K``.

    Returns:
        ``{name: float}``, plus ``"ssr_of_means"``.
    """
    if not metrics:
        raise ValueError("metrics is empty: nothing to summarize")
    values = {name: torch.as_tensor(v, dtype=torch.float64) for name, v in metrics.items()}
    steps = {name: (v.shape[0] if v.ndim >= 1 else None) for name, v in values.items()}
    if any(k is None for k in steps.values()) or len(set(steps.values())) != 1:
        shapes = {name: tuple(v.shape) for name, v in values.items()}
        raise ValueError(
            f"metrics must all have shape (K,) or (K, V) with the same number of steps K, "
            f"got shapes {shapes}"
        )
    n_steps = next(iter(steps.values()))
    if isinstance(burn_in, bool) or not isinstance(burn_in, int):
        raise TypeError(f"burn_in must be an int, got {type(burn_in).__name__}")
    if not 0 <= burn_in < n_steps:
        raise ValueError(
            f"burn_in must satisfy 0 <= burn_in < K = {n_steps} (number of steps), got {burn_in}"
        )
    kept = {name: v[burn_in:] for name, v in values.items()}
    out = {name: float(v.mean()) for name, v in kept.items()}
    if "skill" in kept and "spread" in kept:
        if "ssr" not in out:
            out["ssr"] = float((kept["spread"] / kept["skill"]).mean())
        out["ssr_of_means"] = float(kept["spread"].mean() / kept["skill"].mean())
    return out
