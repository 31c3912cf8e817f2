r"""Observation operators and observations (Savary, Rozet & Louppe 2026, §2.1, Eq. 2–3;
docs/method.md#filtering-problem).

An observation is :math:`y = H(x) + \varepsilon`, :math:`\varepsilon \sim \mathcal{N}(0,
\Sigma_y)`.  Operators map a batch of states ``(N, *S)`` to a batch of observation vectors
``(N, M)``; they are plain differentiable torch functions, so guidance (MMPS, EnSF, EnFF)
can take vector–Jacobian products through them, and they may be nonlinear (:class:`Lambda`).

The noise covariance is an :mod:`azula.linalg.covariance` object (isotropic, diagonal or
full).  A ``NaN`` entry of ``y`` marks a missing value; :meth:`Observation.observed` drops
it consistently from ``y``, ``H`` and :math:`\Sigma_y`, and every filter works with that
reduced observation.

Operators also report the grid *locations* of what they observe (``locations(state_shape)``,
shape ``(M, d)`` in grid-index units) so that localised filters (LETKF) can compute
distances that respect the grid.

References:
    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028
"""

from __future__ import annotations

__all__ = [
    "ObservationOperator",
    "Identity",
    "Select",
    "Mask",
    "Subsample",
    "Coarsen",
    "Stack",
    "Compose",
    "Lambda",
    "Observation",
    "isotropic_noise",
    "diagonal_noise",
    "full_noise",
    "noise_matrix",
    "linear_matrix",
    "synthetic_observations",
]

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from azula.linalg.covariance import (
    Covariance,
    DiagonalCovariance,
    FullCovariance,
    IsotropicCovariance,
)
from torch import Tensor


class ObservationOperator(abc.ABC):
    r"""Base class of observation operators :math:`H: (N, *S) \to (N, M)`.

    ``linear = True`` declares that :math:`H` is a linear map (``Identity``, ``Select``,
    ``Mask``, ``Subsample``, ``Coarsen``, and ``Stack``/``Compose`` of linear operators); the
    guided samplers then use its matrix (:func:`linear_matrix`), formed once, instead of
    differentiating through :math:`H` at every diffusion step.
    """

    linear: bool = False

    @abc.abstractmethod
    def __call__(self, x: Tensor) -> Tensor:
        """Applies the operator to a batch ``(N, *S)``; returns ``(N, M)``."""

    def output_size(self, state_shape: Sequence[int]) -> int:
        """Number ``M`` of observed values for states of shape ``state_shape``."""
        with torch.no_grad():
            return int(self(torch.zeros(1, *state_shape)).shape[-1])

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        """Grid coordinates ``(M, d)`` of the observed values (grid-index units)."""
        raise ValueError(
            f"{type(self).__name__} does not define observation locations; "
            "localised filters need an operator with locations (Identity, Select, Mask, "
            "Subsample, Coarsen, Stack)"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _grid(state_shape: Sequence[int]) -> Tensor:
    """Coordinates ``(prod(S), len(S))`` of every grid point, in flattening order."""
    axes = [torch.arange(n, dtype=torch.float64) for n in state_shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.flatten() for m in mesh], dim=-1)


class Identity(ObservationOperator):
    r"""Observes every component: :math:`H(x) = \mathrm{vec}(x)`."""

    linear = True

    def __call__(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        return _grid(state_shape)


class Select(ObservationOperator):
    r"""Observes the components ``indices`` of the flattened state, :math:`H(x) = x_{[I]}`.

    Arguments:
        indices: Flat indices into the state (a sequence of ints or a 1D integer tensor).
    """

    linear = True

    def __init__(self, indices: Sequence[int] | Tensor) -> None:
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() == 0:
            raise ValueError("Select: indices must not be empty")
        if (idx < 0).any():
            raise ValueError(f"Select: indices must be non-negative, got {idx.tolist()}")
        self.indices = idx

    def __call__(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        if int(self.indices.max()) >= flat.shape[1]:
            raise ValueError(
                f"Select: index {int(self.indices.max())} out of range for states with "
                f"{flat.shape[1]} components"
            )
        return flat[:, self.indices.to(x.device)]

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        return _grid(state_shape)[self.indices]

    def __repr__(self) -> str:
        return f"Select({self.indices.tolist()})"


class Mask(ObservationOperator):
    r"""Observes the grid points where ``mask`` is true (row-major order).

    Arguments:
        mask: A boolean tensor with the state's shape.
    """

    linear = True

    def __init__(self, mask: Tensor) -> None:
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"Mask: mask must be a boolean tensor, got dtype {mask.dtype}")
        if not mask.any():
            raise ValueError("Mask: mask selects no component")
        self.mask = mask

    def __call__(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != tuple(self.mask.shape):
            raise ValueError(
                f"Mask: mask has shape {tuple(self.mask.shape)} but states have shape "
                f"{tuple(x.shape[1:])}"
            )
        return x[:, self.mask.to(x.device)]

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        return _grid(state_shape)[self.mask.flatten()]


class Subsample(ObservationOperator):
    r"""Observes every ``stride``-th grid point along the trailing ``dims`` axes.

    Arguments:
        stride: The stride (same along every subsampled axis).
        offset: The index of the first observed point along each axis.
        dims: Number of trailing axes that are spatial (1 for Lorenz-96, 2 for fields).
    """

    linear = True

    def __init__(self, stride: int, offset: int = 0, dims: int = 2) -> None:
        if int(stride) < 1:
            raise ValueError(f"Subsample: stride must be >= 1, got {stride}")
        if not 0 <= int(offset) < int(stride):
            raise ValueError(f"Subsample: offset must be in [0, stride), got {offset}")
        if dims not in (1, 2, 3):
            raise ValueError(f"Subsample: dims must be 1, 2 or 3, got {dims}")
        self.stride, self.offset, self.dims = int(stride), int(offset), int(dims)

    def _slices(self, ndim: int) -> tuple:
        lead = (slice(None),) * (ndim - self.dims)
        return lead + (slice(self.offset, None, self.stride),) * self.dims

    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim - 1 < self.dims:
            raise ValueError(
                f"Subsample: dims={self.dims} but states have shape {tuple(x.shape[1:])}"
            )
        return x[self._slices(x.ndim)].flatten(1)

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        grid = _grid(state_shape).reshape(*state_shape, len(state_shape))
        return grid[self._slices(len(state_shape) + 1)[1:]].reshape(-1, len(state_shape))

    def __repr__(self) -> str:
        return f"Subsample(stride={self.stride}, offset={self.offset}, dims={self.dims})"


class Coarsen(ObservationOperator):
    r"""Observes averages over non-overlapping ``factor``-wide blocks (average pooling)
    along the trailing ``dims`` axes (the Navier–Stokes coarsening operators of Savary et al.
    2026, §4.2).

    Arguments:
        factor: The block width; every subsampled axis must be divisible by it.
        dims: Number of trailing spatial axes (1 or 2).
    """

    linear = True

    def __init__(self, factor: int, dims: int = 2) -> None:
        if int(factor) < 1:
            raise ValueError(f"Coarsen: factor must be >= 1, got {factor}")
        if dims not in (1, 2):
            raise ValueError(f"Coarsen: dims must be 1 or 2, got {dims}")
        self.factor, self.dims = int(factor), int(dims)

    def __call__(self, x: Tensor) -> Tensor:
        spatial = x.shape[x.ndim - self.dims :]
        if x.ndim - 1 < self.dims or any(n % self.factor for n in spatial):
            raise ValueError(
                f"Coarsen: the trailing {self.dims} axes of states {tuple(x.shape[1:])} must "
                f"be divisible by factor {self.factor}"
            )
        lead = x.shape[: x.ndim - self.dims]
        z = x.reshape(-1, 1, *spatial)
        pool = F.avg_pool1d if self.dims == 1 else F.avg_pool2d
        z = pool(z, self.factor)
        return z.reshape(*lead, -1).flatten(1)

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        d = len(state_shape)
        lead, spatial = tuple(state_shape[: d - self.dims]), state_shape[d - self.dims :]
        coarse = [n // self.factor for n in spatial]
        # block centres in fine-grid index units
        centres = _grid(coarse) * self.factor + (self.factor - 1) / 2
        lead_grid = _grid(lead) if lead else torch.zeros(1, 0, dtype=torch.float64)
        out = torch.cat(
            [
                lead_grid[:, None, :].expand(-1, centres.shape[0], -1),
                centres[None].expand(lead_grid.shape[0], -1, -1),
            ],
            dim=-1,
        )
        return out.reshape(-1, d)

    def __repr__(self) -> str:
        return f"Coarsen(factor={self.factor}, dims={self.dims})"


class Stack(ObservationOperator):
    r"""Concatenates the outputs of several operators: :math:`H(x) = [H_1(x), H_2(x), ...]`."""

    def __init__(self, *operators: ObservationOperator) -> None:
        if len(operators) == 1 and isinstance(operators[0], (list, tuple)):
            operators = tuple(operators[0])
        if not operators:
            raise ValueError("Stack: needs at least one operator")
        self.operators = tuple(operators)
        self.linear = all(getattr(op, "linear", False) for op in self.operators)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.cat([op(x) for op in self.operators], dim=-1)

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        return torch.cat([op.locations(state_shape) for op in self.operators], dim=0)

    def __repr__(self) -> str:
        return f"Stack({', '.join(map(repr, self.operators))})"


class Compose(ObservationOperator):
    r"""Applies ``outer`` to the output of ``inner``: :math:`H(x) = H_o(H_i(x))`, where
    ``outer`` acts on ``(N, M)`` vectors (e.g. ``Lambda(torch.arctan)``)."""

    def __init__(self, outer: ObservationOperator, inner: ObservationOperator) -> None:
        self.outer, self.inner = outer, inner
        self.linear = bool(getattr(outer, "linear", False) and getattr(inner, "linear", False))

    def __call__(self, x: Tensor) -> Tensor:
        return self.outer(self.inner(x))

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        # outer maps (N, M) -> (N, M) elementwise in the supported use; keep inner's.
        return self.inner.locations(state_shape)

    def __repr__(self) -> str:
        return f"Compose({self.outer!r}, {self.inner!r})"


class Lambda(ObservationOperator):
    r"""Wraps any differentiable torch function ``fn: (N, *S) -> (N, M)`` (nonlinear allowed).

    Arguments:
        fn: The function.  Its output is flattened to ``(N, M)``.
        name: A name used in ``repr`` and in run metadata.
        linear: Declare ``fn`` linear (:func:`linear_matrix` is then its matrix); a nonlinear
            function declared linear gives wrong guidance.
    """

    def __init__(
        self, fn: Callable[[Tensor], Tensor], name: str | None = None, linear: bool = False
    ) -> None:
        if not callable(fn):
            raise TypeError(f"Lambda: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "fn")
        self.linear = bool(linear)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x).flatten(1)

    def __repr__(self) -> str:
        return f"Lambda({self.name})"


# ---------------------------------------------------------------------------------------
# Noise covariances (azula objects) with validation


def isotropic_noise(std: float) -> IsotropicCovariance:
    r"""Isotropic noise :math:`\Sigma_y = \mathrm{std}^2 I`."""
    std = float(std)
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"noise std must be a positive finite number, got {std}")
    return IsotropicCovariance(std**2)


def diagonal_noise(variances: Tensor | Sequence[float]) -> DiagonalCovariance:
    r"""Diagonal noise :math:`\Sigma_y = \mathrm{diag}(v)`; ``variances`` are variances."""
    v = torch.as_tensor(variances).flatten()
    if not torch.is_floating_point(v):
        v = v.to(torch.get_default_dtype())
    if not torch.isfinite(v).all() or (v <= 0).any():
        raise ValueError(f"noise variances must be positive and finite, got {v.tolist()}")
    return DiagonalCovariance(v)


def full_noise(matrix: Tensor, rtol: float = 1e-6) -> FullCovariance:
    r"""Full noise covariance from a dense symmetric positive-definite ``(M, M)`` matrix."""
    C = torch.as_tensor(matrix)
    if not torch.is_floating_point(C):
        C = C.to(torch.get_default_dtype())
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"noise covariance must be a square matrix, got shape {tuple(C.shape)}")
    if not torch.isfinite(C).all():
        raise ValueError("noise covariance contains non-finite values")
    scale = C.abs().max().clamp_min(torch.finfo(C.dtype).tiny)
    asym = (C - C.T).abs().max() / scale
    if asym > rtol:
        raise ValueError(
            f"noise covariance must be symmetric, max |C - C^T| / max|C| = {float(asym):.3g}"
        )
    C = (C + C.T) / 2
    L, Q = torch.linalg.eigh(C.double())
    if L.min() <= 0:
        raise ValueError(
            f"noise covariance must be positive definite, smallest eigenvalue {float(L.min()):.3g}"
        )
    return FullCovariance(Q.to(C.dtype), L.to(C.dtype))


def noise_matrix(noise: Covariance, M: int) -> Tensor:
    """Dense ``(M, M)`` matrix of an azula covariance (for small ``M`` only)."""
    if isinstance(noise, IsotropicCovariance):
        lmbda = torch.as_tensor(noise.lmbda)
        if not torch.is_floating_point(lmbda) or lmbda.dtype == torch.float32:
            lmbda = lmbda.to(torch.float64)  # a Python float is exact in float64
        return lmbda * torch.eye(M, dtype=lmbda.dtype)
    if isinstance(noise, DiagonalCovariance):
        return torch.diag(noise.D.flatten())
    if isinstance(noise, FullCovariance):
        return (noise.Q * noise.L) @ noise.Q.T
    raise TypeError(f"unsupported noise covariance type {type(noise).__name__}")


def linear_matrix(
    operator: Callable[[Tensor], Tensor],
    state_shape: Sequence[int],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor | None:
    r"""The matrix ``(M, D)`` of a linear observation operator (``operator.linear``), with
    ``D = prod(state_shape)``: :math:`H_{m,d} = H(e_d)_m`, from the ``D`` basis states in
    one batched call; ``None`` for an operator not declared linear.  Cached on the operator
    per shape, dtype and device (an operator is not expected to change)."""
    if not getattr(operator, "linear", False):
        return None
    key = (tuple(int(n) for n in state_shape), dtype, str(device or "cpu"))
    cache = getattr(operator, "_matrices", None)
    if cache is None:
        cache = {}
        try:
            operator._matrices = cache
        except AttributeError:  # e.g. __slots__: no cache
            pass
    if key not in cache:
        D = math.prod(key[0])
        basis = torch.eye(D, dtype=dtype, device=device).reshape(D, *key[0])
        with torch.no_grad():
            cache[key] = operator(basis).reshape(D, -1).T.contiguous()
    return cache[key]


def _restrict(noise: Covariance, keep: Tensor) -> Covariance:
    """The covariance of the kept components (boolean ``keep`` of length M)."""
    if isinstance(noise, IsotropicCovariance):
        return noise
    if isinstance(noise, DiagonalCovariance):
        return DiagonalCovariance(noise.D.flatten()[keep])
    if isinstance(noise, FullCovariance):
        C = noise_matrix(noise, keep.numel())[keep][:, keep]
        L, Q = torch.linalg.eigh(C)
        return FullCovariance(Q, L)
    raise TypeError(f"unsupported noise covariance type {type(noise).__name__}")


def _check_noise(noise: Covariance, M: int) -> None:
    if isinstance(noise, IsotropicCovariance):
        lmbda = torch.as_tensor(noise.lmbda)
        if not torch.isfinite(lmbda) or lmbda <= 0:
            raise ValueError(f"noise: isotropic variance must be positive, got {float(lmbda)}")
    elif isinstance(noise, DiagonalCovariance):
        if tuple(noise.D.shape) != (M,):
            raise ValueError(f"noise: diagonal has shape {tuple(noise.D.shape)}, y has M = {M}")
        if not torch.isfinite(noise.D).all() or (noise.D <= 0).any():
            raise ValueError("noise: diagonal variances must be positive and finite")
    elif isinstance(noise, FullCovariance):
        if tuple(noise.Q.shape) != (M, M):
            raise ValueError(f"noise: full covariance is {tuple(noise.Q.shape)}, y has M = {M}")
        if not torch.isfinite(noise.L).all() or (noise.L <= 0).any():
            raise ValueError("noise: full covariance must be positive definite")
    else:
        raise TypeError(
            "noise must be an azula IsotropicCovariance, DiagonalCovariance or "
            f"FullCovariance, got {type(noise).__name__}"
        )


@dataclass
class Observation:
    r"""One observation :math:`y = H(x) + \varepsilon`, :math:`\varepsilon \sim
    \mathcal{N}(0, \Sigma_y)` (docs/method.md#filtering-problem).

    Arguments:
        y: The observed values, shape ``(M,)``; ``NaN`` marks a missing value.
        operator: The observation operator :math:`H`, ``(N, *S) -> (N, M)``.
        noise: The noise covariance :math:`\Sigma_y` (azula covariance; see
            :func:`isotropic_noise`, :func:`diagonal_noise`, :func:`full_noise`).
    """

    y: Tensor
    operator: ObservationOperator | Callable[[Tensor], Tensor]
    noise: Covariance
    _observed: Observation | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        y = torch.as_tensor(self.y)
        if not torch.is_floating_point(y):
            y = y.to(torch.get_default_dtype())
        if y.ndim != 1:
            raise ValueError(f"y must be a 1D tensor (M,), got shape {tuple(y.shape)}")
        if torch.isinf(y).any():
            raise ValueError("y contains infinite values (use NaN to mark missing values)")
        if not callable(self.operator):
            raise TypeError(f"operator must be callable, got {type(self.operator).__name__}")
        self.y = y
        _check_noise(self.noise, y.shape[0])

    @property
    def size(self) -> int:
        """Number ``M`` of entries of ``y`` (missing ones included)."""
        return int(self.y.shape[0])

    @property
    def missing(self) -> Tensor:
        """Boolean ``(M,)`` mask of missing entries."""
        return torch.isnan(self.y)

    def observed(self) -> Observation:
        """The observation with missing entries dropped from ``y``, ``H`` and ``Σ_y``."""
        if self._observed is not None:
            return self._observed
        keep = ~self.missing
        if bool(keep.all()):
            self._observed = self
        else:
            op = self.operator
            idx = keep.nonzero().flatten()
            reduced = Observation(
                y=self.y[keep],
                operator=_Restricted(op, idx),
                noise=_restrict(self.noise, keep),
            )
            reduced._observed = reduced
            self._observed = reduced
        return self._observed

    def predict(self, x: Tensor) -> Tensor:
        """:math:`H(x)` with the shape checked against ``y``; ``(N, *S) -> (N, M)``."""
        hx = self.operator(x)
        if hx.ndim != 2 or hx.shape[-1] != self.y.shape[0]:
            raise ValueError(
                f"operator output has shape {tuple(hx.shape)} but y has shape "
                f"{tuple(self.y.shape)}: H(x) must be (N, {self.y.shape[0]})"
            )
        return hx

    def mahalanobis(self, residual: Tensor) -> Tensor:
        r""":math:`r^\top \Sigma_y^{-1} r` for residuals ``(N, M)``; returns ``(N,)``."""
        noise = self.noise.to(dtype=residual.dtype, device=residual.device)
        return (residual * noise.inv(residual)).sum(-1)

    def logdet(self) -> Tensor:
        r""":math:`\log\det \Sigma_y` (missing entries must have been dropped)."""
        M = self.y.shape[0]
        if isinstance(self.noise, IsotropicCovariance):
            return M * torch.log(torch.as_tensor(self.noise.lmbda, dtype=torch.float64))
        return self.noise.logdet().to(torch.float64)

    def log_likelihood(self, x: Tensor, inflation: float = 1.0) -> Tensor:
        r"""Gaussian log-likelihood :math:`\log \mathcal{N}(y; H(x), \Sigma_y / \beta)` with
        normalising constant, for states ``(N, *S)``; returns ``(N,)``.

        ``inflation`` is the :math:`\beta \in (0, 1]` of docs/method.md#inflation (``Σ_y``
        divided by β).
        Missing entries of ``y`` are ignored.
        """
        beta = float(inflation)
        if not (0.0 < beta <= 1.0):
            raise ValueError(f"inflation must be in (0, 1], got {inflation}")
        obs = self.observed()
        M = obs.y.shape[0]
        r = obs.y.to(x) - obs.predict(x)
        m = obs.mahalanobis(r)
        const = M * math.log(2 * math.pi) + obs.logdet().to(x) - M * math.log(beta)
        return -0.5 * (beta * m + const)

    def sample_noise(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draws noise ``(*shape, M)`` from :math:`\\mathcal{N}(0, \\Sigma_y)`."""
        M = self.y.shape[0]
        z = torch.randn(*shape, M, generator=generator, dtype=dtype or self.y.dtype)
        noise = self.noise.to(dtype=z.dtype)
        return noise.color(z.reshape(-1, M)).reshape(*shape, M)


class _Restricted(ObservationOperator):
    """``H`` followed by keeping the observed entries (used for missing values)."""

    def __init__(self, op: Callable[[Tensor], Tensor], idx: Tensor) -> None:
        self.op, self.idx = op, idx
        self.linear = bool(getattr(op, "linear", False))

    def __call__(self, x: Tensor) -> Tensor:
        return self.op(x)[:, self.idx.to(x.device)]

    def locations(self, state_shape: Sequence[int]) -> Tensor:
        return self.op.locations(state_shape)[self.idx]


def synthetic_observations(
    truth: Tensor,
    operator: ObservationOperator,
    noise: Covariance,
    generator: torch.Generator | None = None,
    missing: float = 0.0,
) -> list[Observation]:
    r"""Draws synthetic observations :math:`y^k = H(x^k) + \varepsilon^k` of a true
    trajectory ``truth`` of shape ``(K, *S)``; returns ``K`` observations.

    Arguments:
        missing: Probability that an entry is marked missing (``NaN``).
    """
    if truth.ndim < 2:
        raise ValueError(f"truth must have shape (K, *S), got {tuple(truth.shape)}")
    if not bool(torch.isfinite(truth).all()):
        raise ValueError(
            "truth has non-finite values (NaN or ±inf): NaN marks a missing "
            "observation, not a missing truth"
        )
    if not 0.0 <= missing < 1.0:
        raise ValueError(f"missing must be in [0, 1), got {missing}")
    with torch.no_grad():
        hx = operator(truth)
    obs0 = Observation(hx[0], operator, noise)
    eps = obs0.sample_noise((truth.shape[0],), generator=generator, dtype=hx.dtype)
    y = hx + eps
    if missing > 0:
        drop = torch.rand(y.shape, generator=generator, dtype=y.dtype) < missing
        y = torch.where(drop, torch.full_like(y, float("nan")), y)
    return [Observation(y[k], operator, noise) for k in range(truth.shape[0])]
