r"""Ensemble transform Kalman filters: the global ETKF and the local LETKF (Hunt, Kostelich
& Szunyogh 2007, Physica D 230; docs/method.md#etkf-and-letkf).

**ETKF** (Hunt et al. 2007).  With the background ensemble :math:`x_i^b`, its mean
:math:`\bar x^b`, the unscaled anomalies :math:`X_b = [x_i^b - \bar x^b]` (D×N),
:math:`Y_b = [H(x_i^b) - \bar y^b]` (M×N), :math:`C = Y_b^\top \Sigma_y^{-1}` (N×M, by solves
with :math:`\Sigma_y`) and the prior multiplicative inflation :math:`\rho \ge 1`,

.. math::

    \tilde P^a = \big[(N-1) I_N / \rho + C Y_b\big]^{-1} = V \Lambda^{-1} V^\top, \qquad
    W^a = \big[(N-1) \tilde P^a\big]^{1/2} = \sqrt{N-1}\, V \Lambda^{-1/2} V^\top,

.. math::

    \bar w^a = \tilde P^a C (y - \bar y^b), \qquad
    x_i^a = \bar x^b + X_b \big(W^a + \bar w^a \mathbf{1}^\top\big)_{:, i}.

The square root is the *symmetric* one (it keeps the analysis mean equal to
:math:`\bar x^b + X_b \bar w^a` and makes the LETKF weights vary smoothly in space).
:math:`\rho` inflates the prior covariance, i.e. the anomalies by :math:`\sqrt\rho` — unlike
the EnKF's ``inflation`` (:mod:`genfilter.filters.enkf`), which multiplies the *posterior*
anomalies.  All linear algebra is in float64; no D×D (or D×M) matrix is ever formed.

**LETKF** (Hunt et al. 2007, local analysis).  For every grid point :math:`j` the same
analysis is run with row :math:`j` of :math:`\bar x^b, X_b` only, and with R-localisation: column
:math:`m` of :math:`C` is multiplied by the Gaspari–Cohn weight :math:`\rho_{GC}(d(j, m)/c)`
(:func:`gaspari_cohn`), where :math:`d` is the Euclidean distance in grid-index units between
grid point :math:`j` and the location of observation :math:`m`
(``operator.locations(state_shape)``), minimum-image per periodic axis.  Observations at
:math:`d \ge 2c` get weight 0 and are dropped from the local problem.  The D local N×N
eigendecompositions are batched (chunks of grid points), never looped over in Python.

**Random rotation** (DAPPER's ``rot``; Sakov & Oke 2008).  Optionally, after each analysis the
anomalies are multiplied by a random orthogonal N×N matrix :math:`Q` with
:math:`Q \mathbf{1} = \mathbf{1}` (:func:`mean_preserving_rotation`), which leaves the mean and
the sample covariance unchanged but decorrelates the members from their background
counterparts.  Without it the ETKF scores far worse than the perturbed-observation EnKF on
Lorenz-63 (docs/baselines.md).

References:
    | Adaptive Sampling with the Ensemble Transform Kalman Filter. Part I: Theoretical Aspects
    | (Bishop, Etherton & Majumdar, 2001), Monthly Weather Review 129, 420-436

    | Which Is Better, an Ensemble of Positive-Negative Pairs or a Centered Spherical Simplex
    | Ensemble? (Wang, Bishop & Julier, 2004), Monthly Weather Review 132, 1590-1605

    | Efficient Data Assimilation for Spatiotemporal Chaos: A Local Ensemble Transform Kalman
    | Filter (Hunt, Kostelich & Szunyogh, 2007), Physica D 230, 112-126

    | Implications of the Form of the Ensemble Transformation in the Ensemble Square Root
    | Filters (Sakov & Oke, 2008), Monthly Weather Review 136, 1042-1053

    | Construction of Correlation Functions in Two and Three Dimensions (Gaspari & Cohn, 1999)
    | Quarterly Journal of the Royal Meteorological Society 125, 723-757

    | DAPPER: Data Assimilation with Python: a Package for Experimental Research
    | (Raanes, Chen & Grudzien, 2024), https://doi.org/10.21105/joss.05150
"""

from __future__ import annotations

__all__ = [
    "ETKF",
    "LETKF",
    "etkf_update",
    "letkf_update",
    "gaspari_cohn",
    "grid_distances",
    "mean_preserving_rotation",
]

import abc
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._utils import chunks, make_generator
from ..emulators.base import Emulator
from ..observations import Observation
from .base import (
    Ensemble,
    EnsembleFilter,
    StepInfo,
    check_inflation,
    uniform_log_weights,
)

# Elements per float64 work tensor in the batched LETKF (64 MiB) when chunk_size is None.
_LETKF_BUDGET = 2**23


# ---------------------------------------------------------------------------------------
# Localisation


def gaspari_cohn(z: Tensor | float) -> Tensor:
    r"""Gaspari–Cohn compactly supported correlation (Gaspari & Cohn 1999, eq. 4.10;
    docs/method.md#etkf-and-letkf) at :math:`z = d / c \ge 0`; any shape, same shape out.

    .. math::

        \rho(z) = \begin{cases}
            -\tfrac14 z^5 + \tfrac12 z^4 + \tfrac58 z^3 - \tfrac53 z^2 + 1, & 0 \le z \le 1, \\
            \tfrac1{12} z^5 - \tfrac12 z^4 + \tfrac58 z^3 + \tfrac53 z^2 - 5 z + 4
                - \tfrac{2}{3z}, & 1 < z \le 2, \\
            0, & z > 2.
        \end{cases}

    :math:`\rho(0) = 1`; :math:`\rho` is continuous (with continuous first derivatives) and
    vanishes for :math:`z \ge 2`, i.e. at distances :math:`d \ge 2c`.  Negative ``z`` is
    treated as ``|z|``.
    """
    z = torch.as_tensor(z)
    if not torch.is_floating_point(z):
        z = z.to(torch.get_default_dtype())
    z = z.abs()
    inner = (((-0.25 * z + 0.5) * z + 0.625) * z - 5.0 / 3.0) * z**2 + 1.0
    zs = torch.where(z > 1.0, z, torch.ones_like(z))  # avoids 2/(3z) at z = 0
    outer = ((((zs / 12.0 - 0.5) * zs + 0.625) * zs + 5.0 / 3.0) * zs - 5.0) * zs + 4.0
    outer = outer - 2.0 / (3.0 * zs)
    rho = torch.where(z <= 1.0, inner, torch.where(z < 2.0, outer, torch.zeros_like(z)))
    # round-off can leave values of order -1e-16 just below z = 2
    return rho.clamp_min(0.0)


def grid_distances(points: Tensor, locations: Tensor, periods: Sequence[float] | Tensor) -> Tensor:
    r"""Euclidean distances between grid ``points`` ``(P, d)`` and observation ``locations``
    ``(M, d)`` (grid-index units); returns ``(P, M)``.

    Along every axis with ``periods[a] > 0`` the minimum-image distance
    :math:`\min(|\Delta| \bmod L_a,\ L_a - |\Delta| \bmod L_a)` is used (periodic domain of
    length :math:`L_a`); axes with ``periods[a] == 0`` are not periodic (docs/baselines.md,
    "Conventions").
    """
    if points.ndim != 2 or locations.ndim != 2 or points.shape[1] != locations.shape[1]:
        raise ValueError(
            f"points (P, d) and locations (M, d) must have the same d, got {tuple(points.shape)} "
            f"and {tuple(locations.shape)}"
        )
    L = [float(p) for p in torch.as_tensor(periods, dtype=torch.float64).reshape(-1)]
    if len(L) != points.shape[1]:
        raise ValueError(f"periods must have one entry per axis ({points.shape[1]}), got {len(L)}")
    sq = points.new_zeros(points.shape[0], locations.shape[0])
    for a, length in enumerate(L):  # per axis: (P, M) work tensors, no (P, M, d) one
        delta = (points[:, a, None] - locations[None, :, a]).abs_()
        if length > 0:
            delta = torch.remainder(delta, length)
            delta = torch.minimum(delta, length - delta)
        sq += delta * delta
    return sq.sqrt_()


def _candidates(
    points: Tensor, locations: Tensor, periods: Sequence[float], cutoff: float
) -> Tensor | None:
    """Indices of the observations that may lie within ``cutoff`` of some point of the batch
    ``points`` ``(B, d)`` (per-axis distance to the batch's bounding box, a lower bound of the
    Euclidean distance by the triangle inequality), or ``None`` for all of them."""
    if not math.isfinite(cutoff):
        return None
    lo, hi = points.amin(0), points.amax(0)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    keep = torch.ones(locations.shape[0], dtype=torch.bool, device=locations.device)
    for a, length in enumerate(periods):
        delta = (locations[:, a] - mid[a]).abs()
        if length > 0:
            delta = torch.remainder(delta, length)
            delta = torch.minimum(delta, length - delta)
        keep &= delta - half[a] < cutoff
    return keep.nonzero().flatten()


def _resolve_periods(
    periodic: bool | Sequence[float], state_shape: Sequence[int]
) -> tuple[float, ...]:
    """Per-axis period lengths (0 = not periodic) for states of shape ``state_shape``."""
    if periodic is True:
        return tuple(float(n) for n in state_shape)
    if periodic is False:
        return (0.0,) * len(state_shape)
    periods = tuple(float(p) for p in periodic)
    if len(periods) != len(state_shape):
        raise ValueError(
            f"periodic must give one domain length per state axis ({len(state_shape)} for "
            f"states of shape {tuple(state_shape)}), got {len(periods)}"
        )
    return periods


def _observation_locations(obs: Observation, state_shape: Sequence[int], device=None) -> Tensor:
    """``obs.operator.locations(S)`` as float64 ``(M, len(S))`` on ``device``; a wrong shape
    is a one-line error."""
    M = obs.y.shape[0]
    locations = torch.as_tensor(obs.operator.locations(state_shape), dtype=torch.float64).to(device)
    if locations.shape != (M, len(state_shape)):
        raise ValueError(
            f"operator.locations({state_shape}) has shape {tuple(locations.shape)}, expected "
            f"({M}, {len(state_shape)}) for {M} observed values"
        )
    return locations


def _state_grid(state_shape: Sequence[int], device=None) -> Tensor:
    """Coordinates ``(prod(S), len(S))`` of every grid point, in flattening order."""
    axes = [torch.arange(n, dtype=torch.float64, device=device) for n in state_shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.flatten() for m in mesh], dim=-1)


# ---------------------------------------------------------------------------------------
# Ensemble-space analysis


def _eigen_transform(G: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""The eigendecomposition and mean weights of the ETKF (module docstring) for a batch:
    :math:`G = (N-1) I / \rho + C Y_b = V \Lambda V^\top` ``(B, N, N)`` and
    :math:`\bar w^a = V \Lambda^{-1} V^\top c` from :math:`c = C (y - \bar y)` ``(B, N)``;
    returns ``V (B, N, N)``, ``Λ (B, N)`` and ``w̄ (B, N)``."""
    lam, V = torch.linalg.eigh((G + G.mT) / 2)  # Λ ≥ (N-1)/ρ > 0
    wbar = (V @ ((V.mT @ c[..., None]) / lam[..., None]))[..., 0]
    return V, lam, wbar


def _symmetric_transform(G: Tensor, c: Tensor, n: int) -> Tensor:
    r"""The ETKF weight matrices :math:`W = W^a + \bar w^a \mathbf{1}^\top`,
    :math:`W^a = \sqrt{N-1}\, V \Lambda^{-1/2} V^\top` (module docstring); ``(B, N, N)``,
    column ``i`` = the weights of member ``i``."""
    V, lam, wbar = _eigen_transform(G, c)
    Wa = math.sqrt(n - 1) * (V * lam.rsqrt()[..., None, :]) @ V.mT  # symmetric square root
    return Wa + wbar[..., None]


def mean_preserving_rotation(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> Tensor:
    r"""A random orthogonal ``(n, n)`` matrix :math:`Q` with :math:`Q \mathbf{1} = \mathbf{1}`
    (DAPPER's ``genOG_1``; docs/baselines.md, "Conventions").

    :math:`Q = U \operatorname{diag}(1, O) U^\top`, with :math:`O` Haar-distributed on
    :math:`O(n-1)` (QR of a Gaussian matrix with the sign fix) and :math:`U` the Householder
    reflection that maps :math:`e_1` to :math:`\mathbf{1}/\sqrt n`.  Applied to anomalies
    (``A ← Q A`` with members as rows) it keeps the ensemble mean and the sample covariance
    exactly (:math:`\mathbf{1}^\top Q = \mathbf{1}^\top`, :math:`Q^\top Q = I`).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    n = int(n)
    if n == 1:
        return torch.ones(1, 1, dtype=dtype, device=device)
    Z = torch.randn(n - 1, n - 1, generator=generator, dtype=torch.float64)
    O, R = torch.linalg.qr(Z)
    O = O * torch.where(torch.diagonal(R) < 0, -1.0, 1.0)  # Haar: fix the signs of R's diagonal
    block = torch.eye(n, dtype=torch.float64)
    block[1:, 1:] = O
    v = torch.full((n,), -1.0 / math.sqrt(n), dtype=torch.float64)
    v[0] += 1.0  # v = e_1 - 1/√n
    U = torch.eye(n, dtype=torch.float64) - (2.0 / float(v @ v)) * torch.outer(v, v)
    Q = U @ block @ U.T
    return Q.to(dtype=dtype, device=device)


def _moments(forecast: Tensor, obs: Observation):
    """float64 flat members, their mean and anomalies; H(members) mean and anomalies."""
    X = forecast.flatten(1).double()
    xbar = X.mean(0)
    Xb = X - xbar  # (N, D): rows are the unscaled anomalies (X_b transposed)
    Y = obs.predict(forecast).double()
    ybar = Y.mean(0)
    Yb = Y - ybar  # (N, M): Y_b transposed
    return xbar, Xb, ybar, Yb


def etkf_update(
    forecast: Tensor,
    obs: Observation,
    inflation: float = 1.0,
    *,
    low_rank: bool | None = None,
) -> Tensor:
    r"""ETKF analysis of the module docstring (Hunt et al. 2007; docs/method.md#etkf-and-letkf).

    Arguments:
        forecast: The background ensemble ``(N, *S)``.
        obs: An observation without missing values (use ``obs.observed()``), ``M`` values.
        inflation: Prior multiplicative inflation :math:`\rho \ge 1` (of the covariance).
        low_rank: How to decompose the N×N matrix :math:`G = (N-1) I/\rho + C Y_b`.
            ``False``: a dense symmetric eigendecomposition.  ``True``: from its
            structure — :math:`C Y_b = Y_b^\top \Sigma_y^{-1} Y_b` has rank ≤ M; with the thin
            QR :math:`Y_b^\top = Q R`, :math:`G = a I + (Q U) \operatorname{diag}(s) (Q U)^\top`
            where :math:`R \Sigma_y^{-1} R^\top = U \operatorname{diag}(s) U^\top` (M×M), so
            :math:`G^{-1/2} = a^{-1/2} I + QU \operatorname{diag}((a+s)^{-1/2} - a^{-1/2})
            (QU)^\top`, :math:`a = (N-1)/\rho` — the same matrices, at cost
            :math:`O(N M^2 + N M D)` instead of :math:`O(N^3 + N^2 D)`.  ``None``: low rank when
            ``M < N``.

    Returns:
        The analysis ensemble ``(N, *S)`` in the dtype of ``forecast``.
    """
    N = forecast.shape[0]
    a = (N - 1) / check_inflation(inflation)
    xbar, Xb, ybar, Yb = _moments(forecast, obs)
    M = Yb.shape[1]
    noise = obs.noise.to(dtype=torch.float64, device=Yb.device)
    C = noise.inv(Yb)  # (N, M) = Y_bᵀ Σ⁻¹ (step 3, solves with Σ_y)
    c = C @ (obs.y.to(Yb) - ybar)  # C (y - ȳ), (N,)
    if low_rank is None:
        low_rank = M < N
    if low_rank:
        Q, R = torch.linalg.qr(Yb)  # Y_bᵀ = Q R, Q (N, r), R (r, M) with r = min(N, M)
        S = noise.inv(R) @ R.T  # R Σ⁻¹ Rᵀ, (r, r)
        s, U = torch.linalg.eigh((S + S.T) / 2)
        s = s.clamp_min(0.0)  # C Y_b is positive semi-definite; drop round-off
        E = Q @ U  # orthonormal eigenvectors of C Y_b with eigenvalues s
        wbar = c / a + E @ ((1.0 / (a + s) - 1.0 / a) * (E.T @ c))
        shrink = (a + s).rsqrt() - a**-0.5
        anomalies = math.sqrt(N - 1) * (a**-0.5 * Xb + E @ (shrink[:, None] * (E.T @ Xb)))
        Xa = xbar + wbar @ Xb + anomalies  # = x̄ + (W^a + w̄ 1ᵀ)ᵀ X_b (Wᵃ symmetric)
    else:
        G = a * torch.eye(N, dtype=torch.float64, device=Yb.device) + C @ Yb.T
        W = _symmetric_transform(G[None], c[None], N)[0]
        Xa = xbar + W.T @ Xb  # x_i^a = x̄ + X_b W_{:, i} (step 8)
    return Xa.to(forecast.dtype).reshape(forecast.shape)


def letkf_update(
    forecast: Tensor,
    obs: Observation,
    *,
    radius: float,
    inflation: float = 1.0,
    periodic: bool | Sequence[float] = True,
    chunk_size: int | None = None,
) -> tuple[Tensor, float]:
    r"""LETKF analysis (Hunt et al. 2007; docs/method.md#etkf-and-letkf) with Gaspari–Cohn
    R-localisation.

    Arguments:
        forecast: The background ensemble ``(N, *S)``; the grid is the whole state shape
            ``S`` (one point per component), with coordinates in grid-index units.
        obs: An observation without missing values whose operator has
            ``locations(S) -> (M, len(S))``.
        radius: Gaspari–Cohn length :math:`c` in grid units; weights vanish at
            :math:`d \ge 2c`; ``math.inf`` uses every observation with weight 1 (= ETKF).
        inflation: Prior multiplicative inflation :math:`\rho \ge 1`.
        periodic: ``True``: every axis periodic with length ``S[a]``; ``False``: none;
            a sequence: the domain length of each axis (``0`` = that axis not periodic).
        chunk_size: Grid points per batched solve (``None``: sized to a memory budget).

    Returns:
        The analysis ensemble ``(N, *S)`` and the mean number of observations with non-zero
        weight per grid point.
    """
    N = forecast.shape[0]
    state_shape = tuple(forecast.shape[1:])
    device = forecast.device
    radius = _check_radius(radius)
    a = (N - 1) / check_inflation(inflation)
    periods = _resolve_periods(periodic, state_shape)
    xbar, Xb, ybar, Yb = _moments(forecast, obs)
    P, M = Xb.shape[1], Yb.shape[1]
    noise = obs.noise.to(dtype=torch.float64, device=device)
    Ct = noise.inv(Yb).T.contiguous()  # (M, N): row m = column m of C = Y_bᵀ Σ⁻¹
    Ybt = Yb.T.contiguous()  # (M, N)
    dy = obs.y.to(Yb) - ybar  # (M,)
    locations = _observation_locations(obs, state_shape, device)
    grid = _state_grid(state_shape, device)
    eye = torch.eye(N, dtype=torch.float64, device=device)

    outer = chunk_size or max(1, _LETKF_BUDGET // max(M * (len(state_shape) + 1), 1))
    out = torch.empty_like(Xb)
    n_local = 0
    for block in chunks(P, outer):
        # observations that can be within the Gaspari–Cohn support 2c of this block
        candidates = _candidates(grid[block], locations, periods, 2.0 * radius)
        local = locations if candidates is None else locations[candidates]
        dist = grid_distances(grid[block], local, periods)  # (B, M_candidates)
        count = (dist < 2.0 * radius).sum(1)  # observations with non-zero weight
        n_local += int(count.sum())
        K = int(count.max())
        # keep the K nearest observations of every point (those with weight 0 only pad the
        # batch and contribute exactly 0); Gaspari–Cohn is evaluated on these only
        if K < dist.shape[1]:
            dist, index = torch.topk(dist, K, dim=1, largest=False)  # (B, K)
        else:
            index = torch.arange(dist.shape[1], device=device).expand(dist.shape[0], -1)
        if candidates is not None:
            index = candidates[index]
        weights = gaspari_cohn(dist / radius)
        inner = chunk_size or max(1, _LETKF_BUDGET // max(K * N, N * N, 1))
        for sub in chunks(weights.shape[0], inner):
            w, idx = weights[sub], index[sub]
            Cl = Ct[idx] * w[..., None]  # (b, K, N): localised columns of C
            G = a * eye + Cl.mT @ Ybt[idx]  # (b, N, N)
            c = (Cl.mT @ dy[idx][..., None])[..., 0]  # (b, N)
            V, lam, wbar = _eigen_transform(G, c)
            points = slice(block.start + sub.start, block.start + sub.stop)
            # x^a_{i, j} = x̄_j + Σ_l X_b[l, j] W_j[l, i] with W_j = √(N-1) V Λ^{-1/2} Vᵀ + w̄ 1ᵀ,
            # applied as vector products (O(N²) per point; W_j itself is never formed)
            xb = Xb[:, points].T  # (b, N): the background anomalies at each point
            u = (xb[:, None, :] @ V)[:, 0] * lam.rsqrt()  # (b, N)
            offsets = math.sqrt(N - 1) * (u[:, None, :] @ V.mT)[:, 0]
            offsets = offsets + (xb * wbar).sum(-1, keepdim=True)
            out[:, points] = (xbar[points, None] + offsets).T
    return out.to(forecast.dtype).reshape(forecast.shape), n_local / max(P, 1)


# ---------------------------------------------------------------------------------------
# Filters


def _check_radius(radius: float) -> float:
    try:
        value = float(radius)
    except (TypeError, ValueError):
        raise TypeError(f"radius must be a number, got {type(radius).__name__}") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"radius must be > 0 (grid cells; math.inf for none), got {radius}")
    return value


def _check_emulator(emulator) -> None:
    if not callable(getattr(emulator, "sample", None)):
        raise TypeError("emulator must implement sample()")


def _check_rotate(rotate) -> bool:
    if not isinstance(rotate, bool):
        raise TypeError(f"rotate must be a bool, got {type(rotate).__name__}")
    return rotate


class _TransformFilter(EnsembleFilter, abc.ABC):
    """Shared forecast / analysis / rotation loop of :class:`ETKF` and :class:`LETKF`."""

    emulator: Emulator
    inflation: float
    rotate: bool
    generator: torch.Generator

    @abc.abstractmethod
    def _analysis(self, forecast: Tensor, obs: Observation) -> tuple[Tensor, dict]:
        """The analysis of a forecast ensemble (ETKF or LETKF)."""

    def _rotate(self, x: Tensor) -> Tensor:
        Q = mean_preserving_rotation(x.shape[0], self.generator)
        X = x.flatten(1).double()
        mean = X.mean(0)
        X = mean + Q.to(X.device) @ (X - mean)
        return X.to(x.dtype).reshape(x.shape)

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        r"""Forecast every member with the emulator, then (if ``obs`` has observed values)
        the transform analysis, then the optional random rotation.  A step without
        observations is a pure forecast (no inflation, no rotation).  Members are treated as
        equally weighted; returns uniform log-weights."""

        def analysis(xf, reduced):
            xa, more = self._analysis(xf, reduced)
            return (self._rotate(xa) if self.rotate else xa), more

        _, xa, info = self._forecast_analysis_step(ensemble, obs, analysis)
        return Ensemble(xa, uniform_log_weights(ensemble.size)), info


class ETKF(_TransformFilter):
    r"""Ensemble transform Kalman filter with the symmetric square root (Hunt, Kostelich &
    Szunyogh 2007; docs/method.md#etkf-and-letkf).

    States ``(N, *S)`` are flattened to ``D = prod(S)`` for the analysis
    (:func:`etkf_update`); the observation operator may be nonlinear (it enters only through
    :math:`H(x_i^b)`).

    Arguments:
        emulator: Anything with ``sample(x, generator=)`` (the forecast).
        inflation: Prior multiplicative inflation :math:`\rho \ge 1` of the background
            covariance (anomalies × :math:`\sqrt\rho`); default 1 (none; Hunt et al. 2007's
            formula, DAPPER default).
        rotate: Apply a random mean-preserving rotation of the anomalies after each analysis
            (DAPPER's ``rot``; needed on Lorenz-63, docs/baselines.md); drawn from
            ``generator``.
        generator: ``torch.Generator``, int seed or ``None``.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        inflation: float = 1.0,
        rotate: bool = False,
        generator: torch.Generator | int | None = None,
    ) -> None:
        _check_emulator(emulator)
        self.emulator = emulator
        self.inflation = check_inflation(inflation)
        self.rotate = _check_rotate(rotate)
        self.generator = make_generator(generator)

    def __repr__(self) -> str:
        return f"ETKF(inflation={self.inflation}, rotate={self.rotate})"

    def _analysis(self, forecast: Tensor, obs: Observation) -> tuple[Tensor, dict]:
        return etkf_update(forecast, obs, self.inflation), {}


class LETKF(_TransformFilter):
    r"""Local ensemble transform Kalman filter (Hunt et al. 2007; docs/method.md#etkf-and-letkf)
    with Gaspari–Cohn R-localisation and batched local analyses (:func:`letkf_update`).

    **Conventions.** The grid is the state shape ``S`` itself: component ``j`` of a state
    ``(N, *S)`` sits at its index coordinates (``(i,)`` for Lorenz-96 ``(D,)``, ``(r, c)``
    for a field ``(H, W)``); observation positions come from
    ``obs.operator.locations(S)`` in the same units.  Distances are Euclidean over all axes
    of ``S``, minimum-image along periodic axes.  ``radius`` is the Gaspari–Cohn length
    :math:`c` **in grid cells**: the weight is :math:`\rho_{GC}(d/c)`, 1 at :math:`d = 0`,
    ≈ 0.21 at :math:`d = c`, 0 from :math:`d = 2c` on.  DAPPER (and the EnFF authors' code,
    "following DAPPER") call :math:`\rho_{GC}(d / (1.82 r))` with their radius :math:`r`, so
    their ``r`` corresponds to ``radius = 1.82 r`` here.

    Arguments:
        emulator: Anything with ``sample(x, generator=)``.
        radius: Gaspari–Cohn length :math:`c > 0` in grid cells; ``math.inf`` disables
            localisation (identical to :class:`ETKF`).  No default: it must be tuned (4 in
            the EnSF authors' best L96 run, 1–16 in the EnFF authors' sweeps;
            docs/baselines.md).
        inflation: Prior multiplicative inflation :math:`\rho \ge 1` (default 1).
        rotate: Random mean-preserving rotation after each analysis (same matrix for every
            grid point).
        periodic: ``True`` (default): every axis periodic with the grid length (Lorenz-96,
            the doubly periodic Navier–Stokes fields); ``False``: no wrap-around; a sequence
            of per-axis domain lengths in grid cells (``0`` = that axis not periodic).
        distance: ``"grid"`` (Euclidean distance in grid-index units; the only option).
        chunk_size: Grid points per batched solve (``None``: sized to a 64 MiB budget per
            work tensor); the result does not depend on it beyond round-off.
        generator: ``torch.Generator``, int seed or ``None``.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        radius: float,
        inflation: float = 1.0,
        rotate: bool = False,
        periodic: bool | Sequence[float] = True,
        distance: str = "grid",
        chunk_size: int | None = None,
        generator: torch.Generator | int | None = None,
    ) -> None:
        _check_emulator(emulator)
        radius = _check_radius(radius)
        if not isinstance(periodic, bool):
            if isinstance(periodic, (str, bytes)) or not isinstance(periodic, Sequence):
                raise TypeError(
                    f"periodic must be a bool or a sequence of domain lengths, got {periodic!r}"
                )
            lengths = []
            for p in periodic:
                try:
                    lengths.append(float(p))
                except (TypeError, ValueError):
                    raise TypeError(
                        f"periodic: domain lengths must be numbers, got {p!r}"
                    ) from None
            if not all(math.isfinite(p) and p >= 0 for p in lengths):
                raise ValueError(
                    "periodic: domain lengths must be finite and >= 0 (0 = not periodic), "
                    f"got {lengths}"
                )
            periodic = tuple(lengths)
        if distance != "grid":
            raise ValueError(f"distance must be 'grid', got {distance!r}")
        if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        self.emulator = emulator
        self.radius = radius
        self.inflation = check_inflation(inflation)
        self.rotate = _check_rotate(rotate)
        self.periodic = periodic
        self.distance = distance
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.generator = make_generator(generator)

    def __repr__(self) -> str:
        return (
            f"LETKF(radius={self.radius}, inflation={self.inflation}, rotate={self.rotate}, "
            f"periodic={self.periodic})"
        )

    def _analysis(self, forecast: Tensor, obs: Observation) -> tuple[Tensor, dict]:
        xa, n_local = letkf_update(
            forecast,
            obs,
            radius=self.radius,
            inflation=self.inflation,
            periodic=self.periodic,
            chunk_size=self.chunk_size,
        )
        return xa, {"local_observations": n_local}
