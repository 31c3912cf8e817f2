r"""Diffusion emulators: a conditional azula denoiser, a reverse-diffusion sampler and MMPS
guidance (Savary, Rozet & Louppe 2026, §2.3 and §3; docs/method.md#diffusion-emulator).

The emulator models the transition :math:`p(x^{k+1} \mid x^k)` with a denoiser
:math:`d_\theta(u_t, t \mid c) \approx \mathbb{E}[u \mid u_t, c]` of a *target* ``u`` given
the normalised previous state ``c = (x^k - m) / s`` (passed to the denoiser as the keyword
``cond=``).  The target is the normalised next state, or, with ``residual=True``, the
normalised increment divided by ``residual_std`` (GenCast style):

.. math::
    u = \frac{x^{k+1} - m}{s} \quad \text{or} \quad
    u = \frac{(x^{k+1} - m)/s - (x^k - m)/s}{r} .

Users pass and receive physical units; normalisation happens inside.

Randomness comes from an explicit ``torch.Generator``.  Every azula sampler draws its noise
with ``torch.randn_like``; :class:`_NoiseSource` intercepts those calls and serves slices of
noise drawn once per diffusion step for *all* particles, so results are bit-identical
whatever ``chunk_size`` is (chunking bounds memory only).

References:
    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028

    | Learning Diffusion Priors from Observations by Expectation Maximization (Rozet et al., 2024)
    | https://arxiv.org/abs/2405.13712

    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364

    | Tweedie's Formula and Selection Bias (Efron, 2011)
    | Journal of the American Statistical Association 106, 1602-1614

    | Probabilistic Weather Forecasting with Machine Learning (Price et al., 2025)
    | https://doi.org/10.1038/s41586-024-08252-9
"""

from __future__ import annotations

__all__ = ["DiffusionEmulator", "GuidanceWindow", "SAMPLERS"]

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from azula import sample as azs
from azula.denoise import Denoiser
from azula.noise import Schedule
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .._utils import check_count, chunks
from ..observations import Observation, Select, isotropic_noise, linear_matrix, noise_matrix
from .base import check_states
from .guidance import (
    CompiledProjectedMMPS,
    DPSDenoiser,
    GuidanceWindow,
    KrylovMMPSDenoiser,
    ObservedMMPSDenoiser,
    ProjectedMMPSDenoiser,
    _rows,
    check_dps_scale,
    deconvolved_covariance,
    projected_covariance,
    time_of_log_ratio,
)

SAMPLERS: dict[str, type[azs.Sampler]] = {
    "ddim": azs.DDIMSampler,
    "ddpm": azs.DDPMSampler,
    "euler": azs.EulerSampler,
    "heun": azs.HeunSampler,
    "ito": azs.ItoSampler,
    "pc": azs.PCSampler,
    "zab": azs.zABSampler,
    "xeab": azs.xEABSampler,
}


class _NoiseSource(TorchFunctionMode):
    """Serves ``torch.randn_like`` calls of a sampler step from noise drawn for all ``n``
    particles at once, so that particle ``i`` gets the same noise whatever the chunking.

    Within one diffusion step the k-th ``randn_like`` call of every chunk receives slice
    ``[chunk]`` of the k-th full draw; draws happen in call order on the first chunk.
    """

    def __init__(self, n: int, generator: torch.Generator | None) -> None:
        super().__init__()
        self.n = n
        self.generator = generator
        self.cache: dict[int, Tensor] = {}
        self.call = 0
        self.rows = slice(0, n)

    def new_step(self) -> None:
        self.cache.clear()

    def new_chunk(self, rows: slice) -> None:
        self.rows = rows
        self.call = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.randn_like:
            like = args[0]
            key = self.call
            self.call += 1
            full = self.cache.get(key)
            if full is None:
                device = self.generator.device if self.generator is not None else "cpu"
                full = torch.randn(
                    (self.n, *like.shape[1:]),
                    generator=self.generator,
                    dtype=like.dtype,
                    device=device,
                ).to(like.device)
                self.cache[key] = full
            out = full[self.rows]
            if out.shape != like.shape:
                raise RuntimeError(
                    f"sampler drew noise of shape {tuple(like.shape)} for a chunk of "
                    f"{out.shape[0]} particles; genfilter needs noise shaped like the batch"
                )
            return out
        return func(*args, **kwargs)


class _XEABPlan(NamedTuple):
    """Precomputed coefficients of azula's ``xEABSampler`` (exponential Adams–Bashforth with
    data prediction, DPM-Solver++ multistep; Lu et al. 2022): step ``i`` maps ``x_t`` to
    ``ratio[i] * x_t - sigma_next[i] * sum_j coeffs[i][j] * buffer[j]``."""

    times: Tensor
    ratio: list[Tensor]
    sigma_next: list[Tensor]
    coeffs: list[list[Tensor]]
    order: int

    @classmethod
    def of(cls, sampler: azs.xEABSampler, device) -> _XEABPlan:
        time = sampler.timesteps.to(device=device)
        alpha, sigma = sampler.denoiser.schedule(time)
        u = sigma.log() - alpha.log()
        steps = time.shape[0] - 1
        coeffs = [
            list(azs.xEABSampler._exponential_adams_bashforth(u, i=i, n=sampler.order))
            for i in range(steps)
        ]
        ratio = [sigma[i + 1] / sigma[i] for i in range(steps)]
        return cls(time, ratio, [sigma[i + 1] for i in range(steps)], coeffs, sampler.order)


def _xeab(denoiser: Denoiser, x: Tensor, plan: _XEABPlan, cond: Tensor) -> Tensor:
    """Integrates the probability-flow ODE from ``x`` at ``t = 1`` to ``t = 0`` with the
    precomputed plan: the arithmetic of azula's ``xEABSampler.__call__``, step for step."""
    buffer: list[Tensor] = []
    for i in range(len(plan.coeffs)):
        buffer.append(denoiser(x, plan.times[i], cond=cond).mean)
        if len(buffer) > plan.order:
            buffer.pop(0)
        integral = sum(b * c for b, c in zip(buffer, plan.coeffs[i], strict=True))
        x = plan.ratio[i] * x - plan.sigma_next[i] * integral
    return x


def _as_state_tensor(value: float | Tensor | Sequence[float], state_shape, name: str) -> Tensor:
    v = torch.as_tensor(value, dtype=torch.float64)
    try:
        v = torch.broadcast_to(v, state_shape).clone()
    except RuntimeError:
        raise ValueError(
            f"{name} must be a scalar or broadcastable to the state shape {tuple(state_shape)}, "
            f"got shape {tuple(v.shape)}"
        ) from None
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} must be finite")
    return v


class _Normalisation(nn.Module):
    """The state normalisation shared by the emulators that learn a target ``u``: per-value
    mean ``m`` and scale ``s`` of the state, and, for a residual target, the scale ``r`` of
    the normalised increment (module docstring)."""

    def _init_normalisation(self, state_shape, mean, std, residual, residual_std) -> None:
        self.state_shape = tuple(int(n) for n in state_shape)
        std_t = _as_state_tensor(std, self.state_shape, "std")
        if (std_t <= 0).any():
            raise ValueError("std must be positive")
        rstd = _as_state_tensor(residual_std, self.state_shape, "residual_std")
        if (rstd <= 0).any():
            raise ValueError("residual_std must be positive")
        self.register_buffer("state_mean", _as_state_tensor(mean, self.state_shape, "mean"))
        self.register_buffer("state_std", std_t)
        self.register_buffer("residual_std", rstd)
        self.residual = bool(residual)

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        kw = dict(dtype=like.dtype, device=like.device)
        return self.state_mean.to(**kw), self.state_std.to(**kw), self.residual_std.to(**kw)

    def condition(self, x_prev: Tensor) -> Tensor:
        """Normalised previous state ``c = (x^k - m) / s``."""
        m, s, _ = self._stats(x_prev)
        return (x_prev - m) / s

    def to_target(self, x_next: Tensor, x_prev: Tensor) -> Tensor:
        """Physical next state -> target ``u``."""
        m, s, r = self._stats(x_next)
        z = (x_next - m) / s
        return (z - (x_prev - m) / s) / r if self.residual else z

    def from_target(self, u: Tensor, x_prev: Tensor) -> Tensor:
        """Target ``u`` -> physical next state."""
        m, s, r = self._stats(u)
        z = (x_prev - m) / s + r * u if self.residual else u
        return m + s * z

    def _target_scale(self, like: Tensor) -> Tensor:
        """d x / d u: the (diagonal) Jacobian of :meth:`from_target`."""
        _, s, r = self._stats(like)
        return s * r if self.residual else s

    def _linear_observation(
        self, obs: Observation, like: Tensor, matrix: bool
    ) -> tuple[Callable[[Tensor], Tensor] | None, Tensor | None]:
        r"""For a linear observation operator (``obs.operator.linear``), the map
        :math:`u \mapsto H(\mathrm{from\_target}(u))` is affine; returns its linear part
        :math:`v \mapsto H(v\, \mathrm{d}x/\mathrm{d}u)` and, with ``matrix``, its matrix
        ``(M, D)`` in float64 (:func:`~genfilter.observations.linear_matrix`, formed once per
        operator), so that guidance need not differentiate :math:`H` at every step; ``(None,
        None)`` for an operator not declared linear.  Checks the operator's output against
        ``y`` on one row of ``like``."""
        if not getattr(obs.operator, "linear", False):
            return None, None
        with torch.no_grad():
            obs.predict(like[:1])
        du = self._target_scale(like)
        H = None
        if matrix:
            H = linear_matrix(obs.operator, self.state_shape, device=like.device)
            H = H * du.reshape(1, -1).to(torch.float64)
        return (lambda v: obs.predict(v * du)), H


def _positive_number(v) -> bool:
    """A finite real number > 0 (not a bool)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < math.inf


MOMENTS_SIGMA_LADDER = (0.1, 0.2, 0.3, 0.5, 1.0)
"""The noise levels :meth:`DiffusionEmulator.calibrate_moments_sigma` tries by default."""


class MomentsCalibration(NamedTuple):
    """What :meth:`DiffusionEmulator.calibrate_moments_sigma` returns: the chosen
    ``moments_sigma``, the error of every level tried (mean absolute log-ratio of the
    deconvolved transition variances to the variances of the emulator's own draws), the
    deconvolved variances of every level and the draws' variances (``(K, D)`` each)."""

    best: float
    errors: dict[float, float]
    variances: dict[float, Tensor]
    draw_variances: Tensor


class DiffusionEmulator(_Normalisation):
    r"""Emulator of :math:`p(x^{k+1} \mid x^k)` from a conditional azula denoiser
    (docs/method.md#diffusion-emulator).

    Arguments:
        denoiser: An azula :class:`~azula.denoise.Denoiser` of the target ``u`` that takes the
            normalised previous state as the keyword ``cond``: ``denoiser(u_t, t, cond=c)``.
        state_shape: The shape ``S`` of one state.
        mean, std: State normalisation ``m``, ``s`` (scalars or broadcastable to ``S``).
        residual: Whether the target is the normalised increment (see module docstring).
        residual_std: Scale ``r`` of the normalised increment.
        sampler: Name in :data:`SAMPLERS` or an azula sampler class.  Default ``"xeab"``
            (azula's exponential Adams–Bashforth, DPM-Solver++ multistep, order 2): on the
            exact linear-Gaussian denoiser it reproduces the transition variance within
            2 % at 32–64 steps, where DDIM with η = 1 under-disperses by 16 % at 64 steps
            (docs/method.md#sampling; ``benchmarks/sampler_variance.py``).  ``"ddim"`` is the
            paper's.
        steps: Number of reverse-diffusion steps.
        eta: Stochasticity of DDIM / Itô samplers (:math:`\eta` of Savary et al. 2026,
            Eq. 11).
        sampler_kwargs: Further keyword arguments of the sampler (e.g. ``corrections``).
        guidance: The guided denoiser of :meth:`sample_posterior`: ``"mmps"`` (default;
            moment matching with the Tweedie covariance, options ``covariance``, ``solver``,
            ``iterations``) or ``"dps"`` (diffusion posterior sampling, Chung et al. 2023:
            the likelihood :math:`\mathcal{N}(y; H(\hat x), \Sigma_y)` without the Tweedie
            covariance, one backward pass per diffusion step, biased;
            :class:`~genfilter.emulators.guidance.DPSDenoiser`,
            docs/method.md#dps-guidance).
        covariance: The Tweedie covariance used by the MMPS guidance
            (docs/method.md#optimal-proposal):
            ``"projected"`` (symmetrised, eigenvalues clipped at zero, exact dense solve;
            :class:`~genfilter.emulators.guidance.ProjectedMMPSDenoiser`), ``"tweedie"``
            (the raw Jacobian with a Krylov solve, as in the paper:
            :class:`~genfilter.emulators.guidance.KrylovMMPSDenoiser`, azula's
            ``MMPSDenoiser`` computation), ``"observed"`` (matrix-free: the covariance projected in
            observation space, a direction of non-positive observed variance gets no update;
            :class:`~genfilter.emulators.guidance.ObservedMMPSDenoiser`,
            docs/method.md#observation-space-projection), or ``"auto"`` (default):
            ``"projected"`` when a state has at most :attr:`PROJECTED_MAX_DIM` values, else
            ``"observed"``.  Measured on the shipped Lorenz-63 emulator, setup (b): the MMPS
            proposal's variance in x2 was 210× the exact proposal's with ``"tweedie"``,
            1.03× with ``"projected"`` (``benchmarks/l63_guidance.py``; ``"observed"``:
            ``benchmarks/robust_guidance.py``).
        solver: Krylov solver of ``"tweedie"``: ``"gmres"`` (default, as in the paper; a
            learned Jacobian is not symmetric), ``"cg"`` (azula's solvers) or
            ``"bicgstab"`` (:func:`~genfilter.emulators.guidance.bicgstab`, as in the
            authors' GenCast run; two products per iteration).
        iterations: Solver iterations (a fixed count); ``None`` (default): 1 for ``"gmres"``
            and ``"cg"``, 2 for ``"bicgstab"``.  With ``"observed"``: the dimension ``k`` of
            the Krylov subspace (``k`` products with the covariance); ``None``: the whole
            observation space (``M`` products) when ``M <=`` :attr:`OBSERVED_MAX_OBS`, else
            :attr:`OBSERVED_KRYLOV_DIM`.
        moments_sigma: Noise level :math:`\sigma_t/\alpha_t` (target units) at which
            :meth:`predict_obs_moments` reads the transition covariance when the covariance
            is ``"projected"``: the Tweedie covariance at :math:`x_t = \hat x` is
            deconvolved, :math:`P = (C^{-1} - \alpha_t^2/\sigma_t^2 I)^{-1}` (exact for a
            Gaussian transition).  Default 0.1: on the shipped Lorenz-63 emulator it
            recovers the true one-step variances within a factor 1.35, whereas the Jacobian
            at :math:`\sigma_1 = 100` gives variances near −800 (``benchmarks/l63_guidance.py``).
        mean_sigma: How :meth:`predict_mean` (and :meth:`predict_obs_moments`) estimate
            :math:`\mathbb{E}[x^{k+1} \mid x^k]`.  ``None`` (default): the paper's one
            denoiser call at :math:`t = 1` from :math:`x_1 = \sigma_1 z` (Savary et al. 2026,
            Eq. 27–28).  A number :math:`s`: the fixed point :math:`\mu =
            d_\theta(\alpha_t \mu, t)` at :math:`\sigma_t/\alpha_t = s` (target units), from
            :math:`\mu_0 = d_\theta(0, 1)`, by ``mean_iterations`` iterations (exact for a
            Gaussian transition whatever :math:`s`; each iteration multiplies the error by
            :math:`\lambda/(\lambda + s^2)` per eigenvalue :math:`\lambda` of the transition
            covariance).  Measured on the shipped Lorenz-63 emulator of interval 0.1, the
            paper's estimate is 3.4 transition standard deviations from the mean of 512 of
            the emulator's own draws, the fixed point at :math:`s = 0.3` 0.09
            (``benchmarks/predictive_mean.py``; docs/method.md#tweedie-mean).
        mean_iterations: Fixed-point iterations of ``mean_sigma`` (default 2): each costs
            one denoiser call per particle.
        dps_scale: Step size of ``guidance="dps"``: a positive number :math:`\zeta'` (Chung
            et al.'s rule :math:`\zeta_t = \zeta' / \lVert y - H(\hat x) \rVert_{\Sigma_y}`;
            default 1) or ``"likelihood"`` (:math:`\zeta_t = 1`, the likelihood score: the
            reference of the linear-Gaussian tests, which diverged on the shipped Lorenz-63
            emulator; docs/method.md#dps-guidance).
        guidance_sigma_max: Apply the guidance only where :math:`\sigma_t` is at most this
            (``None``: everywhere, as in the paper).
        chunk_size: Number of particles processed at once (``None``: all); results do not
            depend on it.
        compile: Run the denoiser through ``torch.compile`` (opt-in: the first call of each
            batch shape compiles, tens of seconds on 2 CPU cores for the Lorenz-63 network,
            and torch falls back to eager after 8 shapes; needs a C++ compiler on CPU).
            With the projected covariance and a linear observation operator the whole
            guided call is compiled
            (:func:`~genfilter.emulators.guidance.projected_mmps_mean`: the ``D`` Jacobian
            rows in one batched backward pass; above :attr:`FUSED_MAX_ROWS` particles the
            network and the update as two compiled functions).  The module and its checkpoints are
            unchanged; results agree with the eager ones to floating-point tolerance, not
            bitwise (docs/performance.md).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        state_shape: Sequence[int],
        *,
        mean: float | Tensor = 0.0,
        std: float | Tensor = 1.0,
        residual: bool = False,
        residual_std: float | Tensor = 1.0,
        sampler: str | type[azs.Sampler] = "xeab",
        steps: int = 64,
        eta: float = 1.0,
        sampler_kwargs: dict[str, Any] | None = None,
        guidance: str = "mmps",
        covariance: str = "auto",
        solver: str = "gmres",
        iterations: int | None = None,
        dps_scale: float | str = 1.0,
        moments_sigma: float = 0.1,
        mean_sigma: float | None = None,
        mean_iterations: int = 2,
        guidance_sigma_max: float | None = None,
        chunk_size: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be an azula Denoiser, got {type(denoiser).__name__}")
        self.denoiser = denoiser
        self._init_normalisation(state_shape, mean, std, residual, residual_std)

        if isinstance(sampler, str):
            if sampler.lower() not in SAMPLERS:
                raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
            sampler = SAMPLERS[sampler.lower()]
        if not (isinstance(sampler, type) and issubclass(sampler, azs.Sampler)):
            raise TypeError(f"sampler must be a name or an azula Sampler class, got {sampler!r}")
        self.sampler_cls = sampler
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = int(steps)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = float(eta)
        self.sampler_kwargs = dict(sampler_kwargs or {})
        if guidance not in ("mmps", "dps"):
            raise ValueError(f"guidance must be 'mmps' or 'dps', got {guidance!r}")
        self.guidance = guidance
        if covariance not in ("auto", "projected", "tweedie", "observed"):
            raise ValueError(
                "covariance must be 'auto', 'projected', 'tweedie' or 'observed', "
                f"got {covariance!r}"
            )
        self.covariance = covariance
        if solver not in ("gmres", "cg", "bicgstab"):
            raise ValueError(f"solver must be 'gmres', 'cg' or 'bicgstab', got {solver!r}")
        self.solver = solver
        self.observed_rank = iterations  # None: decided by M at sampling time
        if iterations is None:
            iterations = 2 if solver == "bicgstab" else 1
        if (
            isinstance(iterations, bool)
            or not isinstance(iterations, numbers.Integral)
            or iterations < 1
        ):
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        self.iterations = int(iterations)
        self.dps_scale = check_dps_scale(dps_scale)
        if not moments_sigma > 0:
            raise ValueError(f"moments_sigma must be positive, got {moments_sigma}")
        self.moments_sigma = float(moments_sigma)
        if mean_sigma is not None and not _positive_number(mean_sigma):
            raise ValueError(f"mean_sigma must be a positive number or None, got {mean_sigma!r}")
        self.mean_sigma = None if mean_sigma is None else float(mean_sigma)
        self.mean_iterations = check_count(mean_iterations, "mean_iterations", minimum=0)
        if guidance_sigma_max is not None and guidance_sigma_max <= 0:
            raise ValueError(
                f"guidance_sigma_max must be positive or None, got {guidance_sigma_max}"
            )
        self.guidance_sigma_max = guidance_sigma_max
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False, got {compile!r}")
        self.compile = compile

    @property
    def net(self) -> Denoiser:
        """The denoiser that sampling calls: :attr:`denoiser`, or its ``torch.compile``d
        wrapper with ``compile=True`` (built on first use, kept outside the module's
        parameters and state dict)."""
        if not self.compile:
            return self.denoiser
        compiled = self.__dict__.get("_compiled")
        if compiled is None or compiled[0] is not self.denoiser:
            # the guidance takes several vector-Jacobian products of one forward pass
            # (retain_graph=True), which compiled backward graphs with donated buffers refuse
            import torch._functorch.config as functorch_config

            functorch_config.donated_buffer = False
            # static shapes: with dynamic=True, torch 2.13 on CPU returned wrong input
            # gradients from the second vector-Jacobian product of a retained graph on
            # (measured on the shipped Lorenz-63 denoiser: errors of half the gradient)
            compiled = (self.denoiser, torch.compile(self.denoiser, dynamic=False))
            self.__dict__["_compiled"] = compiled
        return compiled[1]

    @property
    def fused_guidance(self) -> Callable[..., Tensor] | None:
        """With ``compile=True``: the compiled guided call
        (:class:`~genfilter.emulators.guidance.CompiledProjectedMMPS`, static shapes), which
        the projected guidance runs when the observation operator is linear; ``None``
        otherwise (docs/performance.md)."""
        if not self.compile:
            return None
        fused = self.__dict__.get("_fused")
        if fused is None or fused.net is not self.net:
            # self.net sets the compiler options the guidance needs
            fused = CompiledProjectedMMPS(self.net, self.FUSED_MAX_ROWS)
            self.__dict__["_fused"] = fused
        return fused

    FUSED_MAX_ROWS = 512
    """With ``compile=True``: the largest batch whose projected guided call is compiled as
    one graph (:class:`~genfilter.emulators.guidance.CompiledProjectedMMPS`); larger
    batches run the compiled network and the compiled update separately, faster there
    (docs/performance.md)."""

    PROJECTED_MAX_DIM = 64
    """Largest state size for which ``covariance="auto"`` picks ``"projected"`` (it costs
    ``D`` backward passes per diffusion step)."""

    OBSERVED_MAX_OBS = 64
    """Largest observation size for which ``"observed"`` (with ``iterations=None``) works in
    the whole observation space (``M + 1`` backward passes per diffusion step)."""

    MAX_CALIBRATION_DIM = 64
    """Largest state :meth:`calibrate_moments_sigma` takes (it forms ``D`` × ``D`` moments)."""

    OBSERVED_KRYLOV_DIM = 8
    """Krylov dimension of ``"observed"`` with ``iterations=None`` above
    :attr:`OBSERVED_MAX_OBS` (``k + 1 = 9`` backward passes per diffusion step)."""

    @property
    def guidance_covariance(self) -> str:
        """The covariance the guidance uses: ``"projected"``, ``"tweedie"`` or
        ``"observed"``."""
        if self.covariance != "auto":
            return self.covariance
        size = math.prod(self.state_shape)
        return "projected" if size <= self.PROJECTED_MAX_DIM else "observed"

    def observed_krylov_rank(self, M: int) -> int | None:
        """The ``rank`` of :class:`~genfilter.emulators.guidance.ObservedMMPSDenoiser` for
        ``M`` observed values: ``None`` (the whole observation space) or the Krylov
        dimension (``iterations``, or :attr:`OBSERVED_KRYLOV_DIM` when ``M`` is large)."""
        if self.observed_rank is not None:
            return int(self.observed_rank)
        return None if M <= self.OBSERVED_MAX_OBS else self.OBSERVED_KRYLOV_DIM

    # ---------------------------------------------------------------- normalisation
    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    # ---------------------------------------------------------------- sampling core
    def _make_sampler(self, denoiser: Denoiser, like: Tensor) -> azs.Sampler:
        kwargs = dict(self.sampler_kwargs)
        if self.sampler_cls in (azs.DDIMSampler, azs.ItoSampler):
            kwargs.setdefault("eta", self.eta)
        return self.sampler_cls(
            denoiser, steps=self.steps, silent=True, dtype=like.dtype, device=like.device, **kwargs
        )

    def _initial_noise(self, x_prev: Tensor, generator: torch.Generator | None) -> Tensor:
        """:math:`u_1 \\sim \\mathcal{N}(0, \\alpha_1^2 + \\sigma_1^2)` (the target is
        normalised to unit scale), drawn for all particles at once."""
        t1 = torch.ones((), dtype=x_prev.dtype, device=x_prev.device)
        alpha, sigma = self.schedule(t1)
        z = torch.randn(
            x_prev.shape,
            generator=generator,
            dtype=x_prev.dtype,
            device=generator.device if generator is not None else "cpu",
        )
        return torch.sqrt(alpha**2 + sigma**2) * z.to(x_prev.device)

    def _run(
        self,
        x_prev: Tensor,
        make_denoiser: Callable[[slice], Denoiser],
        generator: torch.Generator | None,
        what: str,
    ) -> Tensor:
        """Runs the reverse process for all particles, chunk by chunk at every step."""
        n = x_prev.shape[0]
        cond = self.condition(x_prev)
        u = self._initial_noise(x_prev, generator)
        slices = list(chunks(n, self.chunk_size))
        denoisers = {sl.start: make_denoiser(sl) for sl in slices}
        samplers = {k: self._make_sampler(d, x_prev) for k, d in denoisers.items()}
        some = next(iter(samplers.values()))
        if type(some) is azs.xEABSampler and set(self.sampler_kwargs) <= {"order"}:
            plan = self._xeab_plan(some, x_prev)
            with torch.no_grad():
                out = torch.cat(
                    [_xeab(denoisers[sl.start], u[sl], plan, cond[sl]) for sl in slices]
                )
            self._check_finite(out, what, None)
            return self.from_target(out, x_prev)
        if type(some).step is azs.Sampler.step:
            # multistep samplers (AB family) override __call__; they are deterministic ODE
            # solvers, so running them per chunk cannot break chunk invariance.
            with torch.no_grad():
                out = torch.cat([samplers[sl.start](u[sl], cond=cond[sl]) for sl in slices])
            self._check_finite(out, what, None)
            return self.from_target(out, x_prev)

        times = some.timesteps.to(device=x_prev.device)
        source = _NoiseSource(n, generator)
        with torch.no_grad():
            for i in range(times.shape[0] - 1):
                t, s = times[i], times[i + 1]
                source.new_step()
                nxt = torch.empty_like(u)
                for sl in slices:
                    source.new_chunk(sl)
                    with source:
                        nxt[sl] = samplers[sl.start].step(u[sl], t, s, cond=cond[sl])
                u = nxt
                self._check_finite(u, what, (i, float(t)))
        return self.from_target(u, x_prev)

    def _xeab_plan(self, sampler: azs.xEABSampler, like: Tensor) -> _XEABPlan:
        """The time grid and the exponential Adams–Bashforth coefficients of ``sampler``,
        computed once per schedule, step count, order, dtype and device (azula's sampler
        recomputes them, a small linear solve, at every diffusion step of every call)."""
        key = (self.steps, sampler.order, like.dtype, str(like.device), id(self.schedule))
        cache = self.__dict__.setdefault("_xeab_plans", {})
        if key not in cache:
            cache[key] = _XEABPlan.of(sampler, like.device)
        return cache[key]

    def _check_finite(self, u: Tensor, what: str, where) -> None:
        finite = torch.isfinite(u).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten()
            at = "" if where is None else f" at diffusion step {where[0]} (t = {where[1]:.4f})"
            if getattr(self, "guidance", "mmps") == "dps":
                hint = "with DPS guidance, try a smaller dps_scale or guidance='mmps'"
            else:
                hint = (
                    "with guidance, try covariance='projected' or 'observed', more "
                    "iterations or guidance_sigma_max"
                )
            raise FloatingPointError(
                f"{what} produced non-finite values{at} for {bad.numel()} particle(s) "
                f"(first {bad[:5].tolist()}); {hint} (docs/method.md#optimal-proposal)"
            )

    # ---------------------------------------------------------------- protocol
    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draws :math:`x^{k+1} \sim p_\theta(\cdot \mid x^k)` by reverse diffusion
        (docs/method.md#sampling);
        ``(N, *S) -> (N, *S)``."""
        check_states(x_prev, self.state_shape)
        return self._run(x_prev, lambda sl: self.net, generator, "sample")

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r""":math:`\mathbb{E}[x^{k+1} \mid x^k] \approx d_\theta(x_1, t=1 \mid x^k)` with
        :math:`x_1 = \sigma_1 z` — one denoiser call per particle (Savary et al. 2026, Eq.
        27–28; docs/method.md#tweedie-mean); with ``mean_sigma``, the fixed point of the
        denoiser at that noise level (``1 + mean_iterations`` calls per particle,
        deterministic); ``(N, *S) -> (N, *S)``."""
        mean, _ = self._predict(x_prev, None, generator)
        return mean

    def predict_obs_moments(
        self, x_prev: Tensor, obs: Observation, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""Moment-matched predictive of the observation ("gaussian" weights,
        docs/method.md#fa-apf-weights):
        :math:`\mu_i = \mathbb{E}[x^{k+1} \mid x_1, x_i^k]`, :math:`H(\mu_i)` and
        :math:`H_\mu V_i H_\mu^\top` with :math:`V_i = (\sigma_1^2/\alpha_1)\,\partial_{x_1}
        \mathbb{E}[x \mid x_1, x_i^k]` (Tweedie, docs/method.md#tweedie-covariance), formed
        by ``M`` vector–Jacobian
        products; or, when :attr:`guidance_covariance` is ``"projected"``, :math:`V_i` is the
        transition covariance deconvolved from the PSD-projected Tweedie covariance at
        :math:`\sigma_t/\alpha_t =` ``moments_sigma`` and :math:`x_t = \alpha_t \mu_i`
        (``D`` backward passes; see ``moments_sigma``).  Returns ``mu (N, *S)``, ``H(mu) (N, M)``, ``HVH^T (N, M, M)``.
        ``obs`` must have no missing values (use ``obs.observed()``)."""
        mean, extra = self._predict(x_prev, obs, generator)
        return mean, extra[0], extra[1]

    def calibrate_moments_sigma(
        self,
        states: Tensor,
        ladder: Sequence[float] = MOMENTS_SIGMA_LADDER,
        draws: int = 256,
        *,
        generator: torch.Generator | None = None,
    ) -> MomentsCalibration:
        r"""Chooses ``moments_sigma`` for this emulator from its own draws: for each
        :math:`s` of ``ladder``, the transition variances that the gaussian weights use
        (the diagonal of :math:`V_i`, deconvolved at :math:`\sigma_t/\alpha_t = s`, see
        ``moments_sigma``) against the variances of ``draws`` samples of the emulator
        from each of ``states (K, *S)``; the error of :math:`s` is the mean over states and
        components of :math:`|\ln(V_{i,dd} / \widehat{\mathrm{Var}}_d)|`, and the best
        :math:`s` has the smallest.  No true model and no filter score enter: the choice
        is the emulator's own consistency (docs/method.md#fa-apf-weights).  Exact for a
        Gaussian transition at every :math:`s` (up to the Monte-Carlo error of the draws);
        for a transition far from Gaussian the deconvolution at small :math:`s` reads the
        local curvature of the density at its mean, which can be far from its variance.

        Needs the projected covariance and a state of at most :attr:`MAX_CALIBRATION_DIM`
        values (the moments are formed through the identity observation, ``D`` × ``D``).
        The emulator's ``moments_sigma`` is left as it was."""
        check_states(states, self.state_shape)
        D = math.prod(self.state_shape)
        if self.guidance_covariance != "projected":
            raise ValueError(
                "calibrate_moments_sigma needs covariance='projected' (moments_sigma is "
                f"not used with {self.guidance_covariance!r})"
            )
        if D > self.MAX_CALIBRATION_DIM:
            raise ValueError(
                f"calibrate_moments_sigma forms D × D moments; D = {D} > {self.MAX_CALIBRATION_DIM}"
            )
        ladder = tuple(ladder)
        if not ladder or not all(_positive_number(v) for v in ladder):
            raise ValueError(f"ladder must be positive numbers, got {list(ladder)!r}")
        draws = check_count(draws, "draws", minimum=2)
        K = states.shape[0]
        x = states.repeat_interleave(draws, dim=0)
        samples = self.sample(x, generator=generator).reshape(K, draws, D)
        emp = samples.to(torch.float64).var(dim=1)  # (K, D)
        obs = Observation(
            torch.zeros(D, dtype=states.dtype, device=states.device),
            Select(list(range(D))),
            isotropic_noise(1.0),
        )
        variances = {}
        before = self.moments_sigma
        try:
            for s in ladder:
                self.moments_sigma = float(s)
                _, _, hvh = self.predict_obs_moments(states, obs, generator=generator)
                variances[float(s)] = hvh.diagonal(dim1=1, dim2=2).to(torch.float64)
        finally:
            self.moments_sigma = before
        errors = {
            s: float((v.clamp(min=1e-300) / emp).log().abs().mean()) for s, v in variances.items()
        }
        best = min(errors, key=errors.get)
        return MomentsCalibration(best, errors, variances, emp)

    def _time_of_sigma(self, s: float, like: Tensor) -> Tensor:
        r"""The diffusion time at which :math:`\sigma_t/\alpha_t = s`."""
        log_ratio = torch.tensor([s], dtype=torch.float64).log()
        return time_of_log_ratio(self.schedule, log_ratio)[0].to(like)

    def _predict(self, x_prev, obs, generator):
        check_states(x_prev, self.state_shape)
        n = x_prev.shape[0]
        t1 = torch.ones((), dtype=x_prev.dtype, device=x_prev.device)
        alpha, sigma = self.schedule(t1)
        fixed_point = self.mean_sigma is not None
        if fixed_point:  # deterministic: starts from d(0, 1), no draw at t = 1
            u1 = torch.zeros_like(x_prev)
            t_m = self._time_of_sigma(self.mean_sigma, x_prev)
            alpha_m, _ = self.schedule(t_m)
        else:
            z = torch.randn(
                x_prev.shape,
                generator=generator,
                dtype=x_prev.dtype,
                device=generator.device if generator is not None else "cpu",
            )
            u1 = sigma * z.to(x_prev.device)
        cond = self.condition(x_prev)
        scale = self._target_scale(x_prev)
        if obs is not None and self.guidance_covariance == "projected":
            t_w = self._time_of_sigma(self.moments_sigma, x_prev)
            alpha_w, sigma_w = self.schedule(t_w)

        def mean_target(sl):
            """The transition mean in target units: d(u1, 1), then the ``mean_sigma``
            fixed-point iterations."""
            with torch.no_grad():
                u = self.net(u1[sl], t1, cond=cond[sl]).mean
                for _ in range(self.mean_iterations if fixed_point else 0):
                    u = self.net(alpha_m * u, t_m, cond=cond[sl]).mean
            return u

        means, hmeans, hvhs = [], [], []
        for sl in chunks(n, self.chunk_size):
            if obs is None:
                means.append(self.from_target(mean_target(sl), x_prev[sl]))
                continue
            if self.guidance_covariance == "projected":
                u_hat = mean_target(sl)
                with torch.enable_grad():
                    u_in = (alpha_w * u_hat).detach().requires_grad_()
                    u_w = self.net(u_in, t_w, cond=cond[sl]).mean
                    C = projected_covariance(_rows(u_w, u_in), sigma_w**2 / alpha_w)
                    C = deconvolved_covariance(C, (sigma_w / alpha_w) ** 2)
                    x_hat = self.from_target(u_hat, x_prev[sl])
                    x_lin = x_hat.detach().requires_grad_()
                    hx = obs.predict(x_lin)
                    H = _rows(hx, x_lin).to(torch.float64)
                sc = scale.reshape(1, -1).to(torch.float64).expand(x_hat.shape[0], -1)
                HS = H * sc.unsqueeze(1)  # H diag(scale): C is in target units
                means.append(x_hat.detach())
                hmeans.append(hx.detach())
                hvhs.append((HS @ C @ HS.transpose(1, 2)).to(hx.dtype))
                continue
            with torch.enable_grad():
                u_in = u1[sl].detach().requires_grad_()
                u_hat = self.net(u_in, t1, cond=cond[sl]).mean
                x_hat = self.from_target(mean_target(sl) if fixed_point else u_hat, x_prev[sl])
                x_lin = x_hat.detach().requires_grad_()
                hx = obs.predict(x_lin)
                M = hx.shape[-1]
                cols = []
                for m in range(M):
                    e = torch.zeros_like(hx)
                    e[:, m] = 1.0
                    (ht_e,) = torch.autograd.grad(hx, x_lin, e, retain_graph=True)
                    (jt,) = torch.autograd.grad(u_hat, u_in, ht_e * scale, retain_graph=True)
                    v = (sigma**2 / alpha) * jt * scale  # V H^T e_m in physical units
                    hv = torch.func.jvp(obs.predict, (x_hat.detach(),), (v,))[1]
                    cols.append(hv)
                hvh = torch.stack(cols, dim=-1) if cols else hx.new_zeros(hx.shape[0], 0, 0)
            means.append(x_hat.detach())
            hmeans.append(hx.detach())
            hvhs.append(hvh.detach())
        mean = torch.cat(means)
        if obs is None:
            return mean, None
        return mean, (torch.cat(hmeans), torch.cat(hvhs))

    def sample_posterior(
        self,
        x_prev: Tensor,
        obs: Observation,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Draws from the optimal proposal :math:`p(x^{k+1} \mid x^k, y^{k+1})` by reverse
        diffusion with the MMPS-guided denoiser (Savary et al. 2026, §3.2 and Algorithm 2;
        docs/method.md#optimal-proposal), or the DPS-guided one with ``guidance="dps"``
        (docs/method.md#dps-guidance); missing entries of ``y`` are dropped.
        ``(N, *S) -> (N, *S)``."""
        check_states(x_prev, self.state_shape)
        if not isinstance(obs, Observation):
            raise TypeError(f"obs must be an Observation, got {type(obs).__name__}")
        obs = obs.observed()
        if obs.y.shape[0] == 0:
            return self.sample(x_prev, generator=generator)
        y = obs.y.to(dtype=x_prev.dtype, device=x_prev.device)
        noise = obs.noise.to(dtype=x_prev.dtype, device=x_prev.device)
        projected = self.guidance == "mmps" and self.guidance_covariance == "projected"
        observed = self.guidance == "mmps" and self.guidance_covariance == "observed"
        A_lin, H_lin = self._linear_observation(obs, x_prev, matrix=projected)
        if projected:
            cov_dense = noise_matrix(obs.noise, y.shape[0]).to(device=x_prev.device)

        def make(sl: slice) -> Denoiser:
            xp = x_prev[sl]

            def A(u: Tensor) -> Tensor:
                return obs.predict(self.from_target(u, xp))

            if self.guidance == "dps":
                guided = DPSDenoiser(self.net, y=y, A=A, cov_y=noise, scale=self.dps_scale)
            elif projected:
                # compile=True with a linear operator: the whole guided call is one compiled
                # function, which calls the plain denoiser inside it
                fused = self.fused_guidance if H_lin is not None else None
                offset = None
                if fused is not None:
                    with torch.no_grad():
                        offset = A(torch.zeros_like(xp))
                    offset = offset.reshape(offset.shape[0], -1)
                guided = ProjectedMMPSDenoiser(
                    self.net if fused is None else self.denoiser,
                    y=y,
                    A=A,
                    cov_y=cov_dense,
                    H=H_lin,
                    fused=fused,
                    offset=offset,
                )
            elif observed:
                guided = ObservedMMPSDenoiser(
                    self.net,
                    y=y,
                    A=A,
                    cov_y=obs.noise,
                    rank=self.observed_krylov_rank(y.shape[0]),
                    A_lin=A_lin,
                )
            else:
                guided = KrylovMMPSDenoiser(
                    self.net,
                    y=y,
                    A=A,
                    cov_y=noise,
                    solver=self.solver,
                    iterations=self.iterations,
                    A_lin=A_lin,
                )
            if self.guidance_sigma_max is None:
                return guided
            return GuidanceWindow(guided, self.net, self.guidance_sigma_max)

        return self._run(x_prev, make, generator, "sample_posterior")

    def extra_repr(self) -> str:
        return (
            f"state_shape={self.state_shape}, sampler={self.sampler_cls.__name__}, "
            f"steps={self.steps}, eta={self.eta}, guidance={self.guidance}, "
            f"covariance={self.covariance}, solver={self.solver}, "
            f"iterations={self.iterations}, residual={self.residual}"
            + (f", dps_scale={self.dps_scale}" if self.guidance == "dps" else "")
            + (
                f", mean_sigma={self.mean_sigma}, mean_iterations={self.mean_iterations}"
                if self.mean_sigma is not None
                else ""
            )
        )
