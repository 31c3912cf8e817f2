r"""Ensemble score filter (EnSF; Bao, Zhang & Zhang, CMAME 432 (2024) 117447, arXiv
2309.00983; Savary, Rozet & Louppe 2026, App. B.3; docs/method.md#ensf).

Training-free: the prior score is a Monte-Carlo functional of the forecast ensemble, the
observation enters as a damped likelihood score, and a reverse-time SDE in pseudo-time
:math:`t \in [0, 1]` turns Gaussian noise into the analysis ensemble.

Forward noising (official release, two-parameter form):

.. math:: Z_t \mid Z_0 \sim \mathcal{N}(\alpha_t Z_0, \beta_t^2 I), \quad
    \alpha_t = 1 - (1 - \varepsilon_\alpha) t, \quad
    \beta_t^2 = \varepsilon_\beta + (1 - \varepsilon_\beta) t,

i.e. :math:`dZ = b(t) Z\,dt + \sigma(t)\,dW` with :math:`b(t) = -(1 - \varepsilon_\alpha) /
\alpha_t` and :math:`\sigma^2(t) = (1 - \varepsilon_\beta) + 2 (1 - \varepsilon_\alpha)
\beta_t^2 / \alpha_t`.

Prior score of the empirical forecast ensemble :math:`\{x_j^f\}`:

- ``"paired"`` (what the official code runs): particle :math:`i` is scored against its own
  member only, :math:`S_i(z_i, t) = -(z_i - \alpha_t x_i^f) / \beta_t^2`;
- ``"mixture"``: :math:`S(z, t) = \sum_j w_j (-(z - \alpha_t x_j^f) / \beta_t^2)`,
  :math:`w_j = \mathrm{softmax}_j(-\lVert z - \alpha_t x_j^f \rVert^2 / (2 \beta_t^2))`
  (log domain, chunked; the EnFF authors' re-implementation).

Posterior score :math:`S_{post}(z, t) = S(z, t) + h(t) \nabla_z \ell(z)` with the likelihood
gradient evaluated at the noisy state :math:`z` itself (one vector–Jacobian product through
:math:`H` per member and step), every component clipped to :math:`[-c_{max}, c_{max}]`.

Reverse sampling on :math:`t_n = 1 - n/K`, :math:`\Delta = 1/K`, from :math:`Z \sim
\mathcal{N}(0, I)`: Euler–Maruyama

.. math:: Z \leftarrow Z - \Delta [b(t_n) Z - \sigma^2(t_n) S_{post}(Z, t_n)]
    + \sqrt{\Delta}\, \sigma(t_n)\, \xi

or probability-flow Euler (drift with :math:`\tfrac12 \sigma^2 S_{post}`, no noise).

Interpretation (ours; docs/baselines.md): even with a perfect score the sampler targets the forecast
ensemble convolved with :math:`\mathcal{N}(0, \varepsilon_\beta I)` — :math:`\varepsilon_\beta`
is an additive inflation *in normalised units* — and the likelihood acts as a per-member
nudge of size :math:`\sim \varepsilon_\beta`; the gain does not depend on the forecast
covariance.  EnSF is therefore not an exact Bayesian update and its defaults only make
sense for states with O(1) components: pass climatological ``mean`` / ``std``.

"Official release" below means the authors' code, github.com/zezhongzhang/EnSF; "Utah" the
re-implementation of the EnFF authors, github.com/Utah-Math-Data-Science/
Data-Assimilation-Flow-Matching.

References:
    | An Ensemble Score Filter for Tracking High-Dimensional Nonlinear Dynamical Systems
    | (Bao, Zhang & Zhang, 2024), https://arxiv.org/abs/2309.00983

    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028
"""

from __future__ import annotations

__all__ = ["EnSF", "linear_damping"]

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._utils import make_generator
from ..emulators.base import Emulator
from ..observations import Observation
from .base import (
    Ensemble,
    EnsembleFilter,
    StepInfo,
    check_inflation,
    check_particles,
    inflate,
    uniform_log_weights,
)

# elements of one (rows, N) block of mixture weights: 2^15 float64 values (256 KiB) stay in
# cache; at N = 512 one 2 MiB block was 4-5x slower (measured on 1 CPU thread). Rows are
# independent, so the chunking does not change a single bit of the result (tested).
_MIXTURE_ELEMENTS = 2**15


def linear_damping(t: float) -> float:
    r"""Default EnSF damping :math:`h(t) = 1 - t` (the authors' release notebook and legacy
    script, and the Utah re-implementation)."""
    return 1.0 - t


# ------------------------------------------------------------------------- shared helpers
# (also used by the ensemble flow filter, :mod:`genfilter.filters.enff`)


def _randn(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise drawn with ``generator`` (on its device), moved to ``like``'s."""
    device = generator.device if generator is not None else "cpu"
    z = torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=device)
    return z.to(like.device)


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_chunk(chunk, name: str) -> int | None:
    if chunk is None:
        return None
    return _check_positive_int(chunk, name)


class Normalizer:
    r"""Affine state normalisation :math:`z = (x - m) / s` (and back).

    Arguments:
        mean, std: Scalars or tensors broadcastable to the state shape ``S`` (e.g.
            climatological per-variable statistics); ``None`` means 0 and 1.
    """

    def __init__(self, mean: float | Tensor | None = None, std: float | Tensor | None = None):
        if mean is not None:
            mean = torch.as_tensor(mean, dtype=torch.float64)
            if not torch.isfinite(mean).all():
                raise ValueError(f"mean must be finite, got {mean}")
        if std is not None:
            std = torch.as_tensor(std, dtype=torch.float64)
            if not (torch.isfinite(std).all() and (std > 0).all()):
                raise ValueError(f"std must be positive and finite, got {std}")
        self.mean, self.std = mean, std

    def check(self, state_shape: Sequence[int]) -> None:
        """Raises if ``mean`` / ``std`` do not broadcast to states of shape ``state_shape``."""
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v is None:
                continue
            try:
                out = torch.broadcast_shapes(tuple(v.shape), tuple(state_shape))
            except RuntimeError:
                out = None
            if out != tuple(state_shape):
                raise ValueError(
                    f"{name} of shape {tuple(v.shape)} does not broadcast to the state shape "
                    f"{tuple(state_shape)}"
                )

    def normalize(self, x: Tensor) -> Tensor:
        if self.mean is not None:
            x = x - self.mean.to(x)
        if self.std is not None:
            x = x / self.std.to(x)
        return x

    def denormalize(self, z: Tensor) -> Tensor:
        if self.std is not None:
            z = z * self.std.to(z)
        if self.mean is not None:
            z = z + self.mean.to(z)
        return z


def _log_likelihood_and_grad(
    obs: Observation, z: Tensor, normalizer: Normalizer, state_shape: Sequence[int]
) -> tuple[Tensor, Tensor]:
    r""":math:`\ell(z) = -\tfrac12 (y - H(x))^\top \Sigma_y^{-1} (y - H(x))` with :math:`x` the
    de-normalised ``z`` ``(N, D)``, and its gradient with respect to ``z`` (one
    vector–Jacobian product through ``H`` for the whole batch).  ``obs`` must have no
    missing values.  Returns ``(ell (N,), grad (N, D))``."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        x = normalizer.denormalize(zz.reshape(zz.shape[0], *state_shape))
        r = obs.y.to(dtype=z.dtype, device=z.device) - obs.predict(x)
        ell = -0.5 * obs.mahalanobis(r)
        (grad,) = torch.autograd.grad(ell.sum(), zz)
    return ell.detach(), grad


def _mixture_averages(
    queries: Tensor,
    centres: Tensor,
    var: float,
    values: Tensor,
    biases: Sequence[Tensor | None] = (None,),
    chunk: int | None = None,
    argmax: bool = True,
) -> tuple[list[Tensor], Tensor | None]:
    r"""Softmax-weighted averages of ``values`` over the members of a Gaussian mixture.

    For query :math:`q_i` and each bias vector :math:`c` (``None`` = 0), returns
    :math:`\sum_j w_{ij} v_j` with :math:`w_{ij} = \mathrm{softmax}_j(-\lVert q_i - \mu_j
    \rVert^2 / (2\,\mathrm{var}) + c_j)` (the EnSF mixture score and the EnFF Monte-Carlo
    velocity; docs/method.md#ensf, docs/method.md#enff).

    The squared distances are expanded, :math:`\lVert q\rVert^2 - 2 q\cdot\mu + \lVert
    \mu\rVert^2`, so the O(N² D) work is one matrix product; they are formed in float64
    after subtracting the centres' mean (cancellation then costs ~1e-16 of the squared
    spread, not of the squared state), and the softmax is taken in the log domain.
    ``chunk`` query rows are processed at a time, bounding the ``(rows, N)`` blocks.

    Arguments:
        queries ``(Q, D)``; centres ``(N, D)``; values ``(N, D)``; biases: ``(N,)`` each.

    Returns:
        A list of ``(Q, D)`` averages (one per bias) and the argmax ``(Q,)`` of the
        unbiased weights (used to detect F2P pair switching; ``None`` with ``argmax=False``,
        which skips it: a fifth of the EnSF analysis at N = 512).
    """
    Q = queries.shape[0]
    N = centres.shape[0]
    rows = chunk or max(1, _MIXTURE_ELEMENTS // max(1, N))
    ref = centres.double().mean(0)
    c = centres.double() - ref
    c2 = (c * c).sum(-1)  # (N,)
    outs: list[list[Tensor]] = [[] for _ in biases]
    best = []
    for start in range(0, Q, rows):
        q = queries[start : start + rows].double() - ref
        d2 = ((q * q).sum(-1, keepdim=True) - 2.0 * (q @ c.T) + c2).clamp_min(0.0)
        logits = -d2 / (2.0 * var)  # (rows, N)
        if argmax:
            best.append(logits.argmax(-1))
        for k, bias in enumerate(biases):
            lg = logits if bias is None else logits + bias.double()[None]
            w = torch.softmax(lg, dim=-1).to(values.dtype)
            outs[k].append(w @ values)
    return [torch.cat(o) for o in outs], (torch.cat(best) if argmax else None)


# ---------------------------------------------------------------------------- the filter


class EnSF(EnsembleFilter):
    r"""Ensemble score filter (Bao, Zhang & Zhang 2024; docs/method.md#ensf).

    One cycle: forecast every member with the emulator's ``sample``, then the
    reverse-SDE analysis :meth:`update`.  With ``obs`` ``None`` (or all values missing)
    the step is forecast only: the analysis is skipped.  Weights stay uniform.

    Defaults and their sources (the authors' code; docs/baselines.md):

    - ``steps`` K = 500: official release, ``Nt_SDE`` in run_all_EnSF/param_EnSF.csv
      (legacy 10⁶-dim script: 100; fine-tuning grid: 200).  Few steps are fatal (stiff
      drift near t = 0, σ²/β² ~ 1/ε_β): keep K ≳ 100.
    - ``eps_alpha`` ε_α = 0.5, ``eps_beta`` ε_β = 0.025: best/default run ("method 0") of
      param_EnSF.csv; also the Utah re-implementation's defaults.
    - ``score`` = ``"paired"``: what the official release runs (diffusion.py
      ``score_gaussian_diffusion_diag`` with gm_var_ratio 0); ``"mixture"`` is the paper's
      form and the Utah default.
    - ``damping`` h(t) = 1 − t: run_single_EnSF.ipynb, legacy script, Utah filters.py.
    - ``score_clip`` 1000 (elementwise): diffusion.py ``post_score``; Utah
      ``sampling_max_score_norm: 1000``.
    - ``solver`` ``"em"`` (Euler–Maruyama, ``solver_type`` 0 of param_EnSF.csv); ``"pf"``
      = probability-flow Euler.
    - ``standardize_init`` False: Utah draws plain N(0, I); the official notebook
      standardises the terminal noise per component across the ensemble (True).
    - ``inflation`` 1 (none): param_EnSF.csv.

    Measured behaviour (tests/filters/test_ensf.py, normalised units): without likelihood
    the paired Euler–Maruyama map is :math:`x_i \mapsto 0.994\,x_i^f + \mathcal{N}(0,
    0.026)` (K = 500; an independent numpy check gave, for member 2.0, mean 1.988 and variance
    0.026).  Two
    consequences of starting from :math:`\mathcal{N}(0, I)` instead of the true t = 1
    marginal :math:`\mathcal{N}(\varepsilon_\alpha x^f, \beta_1^2 I)`: the
    probability-flow solver never forgets it (mean shrunk by :math:`1 -
    \varepsilon_\alpha\sqrt{\varepsilon_\beta}` ≈ 0.92 towards the origin), and with the
    mixture score the member selection is biased towards the origin (≈ 6 % of the forecast
    mean).  Both vanish for a centred state — another reason to pass ``mean`` / ``std``.

    Arguments:
        emulator: Anything with ``sample(x, generator=)`` (the forecast).
        steps: Number K of pseudo-time steps (``t_n = 1 - n/K``; K steps, K + 1 grid points
            as in the official code).
        eps_alpha: ε_α ∈ (0, 1], the signal :math:`\alpha_1` left at t = 1.
        eps_beta: ε_β ∈ [0, 1), the noise variance :math:`\beta_0^2` at t = 0 (additive
            inflation in normalised units).
        score: ``"paired"`` or ``"mixture"`` prior score.
        damping: h(t), a callable on floats; h(0) = 1, h(1) = 0, decreasing is the intended
            shape (not enforced); values must be finite and >= 0.
        score_clip: c_max > 0, elementwise clip of the posterior score (``inf`` = none).
        solver: ``"em"`` (Euler–Maruyama) or ``"pf"`` (probability-flow Euler).
        standardize_init: Standardise the terminal noise per component across members.
        inflation: Multiplicative posterior inflation λ >= 1 (docs/method.md#baselines).
        mean, std: State normalisation :math:`z = (x - m)/s` (broadcastable to the state
            shape); the analysis runs on ``z`` and ``H`` is applied to de-normalised states.
            Default ``None``: no normalisation — right only for states that are already
            O(1).  For unnormalised systems (e.g. Lorenz-63, components ~ 10) pass the
            climatological mean and standard deviation (the score scale,
            ε_β and the N(0, I) terminal law all assume O(1) components).
        mixture_chunk: Query rows per chunk of the O(N² D) mixture term (``None``:
            automatic, blocks of about 2¹⁵ weights).
        generator: ``torch.Generator``, int seed or ``None``.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        steps: int = 500,
        eps_alpha: float = 0.5,
        eps_beta: float = 0.025,
        score: str = "paired",
        damping: Callable[[float], float] = linear_damping,
        score_clip: float = 1000.0,
        solver: str = "em",
        standardize_init: bool = False,
        inflation: float = 1.0,
        mean: float | Tensor | None = None,
        std: float | Tensor | None = None,
        mixture_chunk: int | None = None,
        generator: torch.Generator | int | None = None,
    ) -> None:
        if not callable(getattr(emulator, "sample", None)):
            raise TypeError("emulator must implement sample()")
        self.steps = _check_positive_int(steps, "steps")
        eps_alpha, eps_beta = float(eps_alpha), float(eps_beta)
        if not 0.0 < eps_alpha <= 1.0:
            raise ValueError(f"eps_alpha must be in (0, 1], got {eps_alpha}")
        if not 0.0 <= eps_beta < 1.0:
            raise ValueError(f"eps_beta must be in [0, 1), got {eps_beta}")
        if score not in ("paired", "mixture"):
            raise ValueError(f"score must be 'paired' or 'mixture', got {score!r}")
        if not callable(damping):
            raise TypeError(f"damping must be a callable t -> h(t), got {type(damping).__name__}")
        score_clip = float(score_clip)
        if not score_clip > 0.0:  # also rejects NaN
            raise ValueError(f"score_clip must be > 0 (inf = no clipping), got {score_clip}")
        if solver not in ("em", "pf"):
            raise ValueError(f"solver must be 'em' (Euler–Maruyama) or 'pf', got {solver!r}")
        self.eps_alpha, self.eps_beta = eps_alpha, eps_beta
        self.score, self.solver = score, solver
        self.score_clip = score_clip
        self.standardize_init = bool(standardize_init)
        self.inflation = check_inflation(inflation)
        self.normalizer = Normalizer(mean, std)
        self.mixture_chunk = _check_chunk(mixture_chunk, "mixture_chunk")
        self.emulator = emulator
        self.damping = damping
        self.generator = make_generator(generator)
        # coefficients on the grid t_n = 1 - n/K, n = 0..K-1 (reverse Euler–Maruyama grid)
        self.times = [1.0 - n / self.steps for n in range(self.steps)]
        self._h = []
        for t in self.times:
            h = float(damping(t))
            if not (math.isfinite(h) and h >= 0.0):
                raise ValueError(f"damping({t:g}) must be finite and >= 0, got {h}")
            self._h.append(h)

    # ---------------------------------------------------------------- schedule
    def alpha(self, t: float) -> float:
        r""":math:`\alpha_t = 1 - (1 - \varepsilon_\alpha) t`."""
        return 1.0 - (1.0 - self.eps_alpha) * t

    def beta2(self, t: float) -> float:
        r""":math:`\beta_t^2 = \varepsilon_\beta + (1 - \varepsilon_\beta) t`."""
        return self.eps_beta + (1.0 - self.eps_beta) * t

    def drift(self, t: float) -> float:
        r""":math:`b(t) = d \log \alpha_t / dt = -(1 - \varepsilon_\alpha) / \alpha_t`."""
        return -(1.0 - self.eps_alpha) / self.alpha(t)

    def diffusion2(self, t: float) -> float:
        r""":math:`\sigma^2(t) = (1 - \varepsilon_\beta) + 2 (1 - \varepsilon_\alpha)
        \beta_t^2 / \alpha_t`."""
        return (1.0 - self.eps_beta) + 2.0 * (1.0 - self.eps_alpha) * self.beta2(t) / self.alpha(t)

    def prior_score(self, z: Tensor, prior: Tensor, t: float) -> Tensor:
        r"""Prior score :math:`S(z, t)` of the forecast ensemble (normalised, flat
        ``(N, D)``), paired or mixture (module docstring)."""
        a, b2 = self.alpha(t), self.beta2(t)
        if self.score == "paired":
            return -(z - a * prior) / b2
        centres = a * prior
        (avg,), _ = _mixture_averages(
            z, centres, b2, centres, chunk=self.mixture_chunk, argmax=False
        )
        return -(z - avg) / b2

    # ---------------------------------------------------------------- analysis
    def update(self, forecast: Tensor, obs: Observation | None) -> tuple[Tensor, dict]:
        r"""The EnSF analysis of a forecast ensemble ``(N, *S)`` (module docstring).

        ``obs`` ``None`` runs the reverse SDE with the prior score alone (the map that
        :meth:`step` skips for forecast-only steps), which reproduces the forecast ensemble
        up to the ε_β noise.  Returns the analysis ``(N, *S)`` and diagnostics:
        ``clipped`` (number of clipped score components over all steps) and
        ``clipped_fraction``.
        """
        check_particles(forecast, "forecast")
        state_shape = tuple(forecast.shape[1:])
        self.normalizer.check(state_shape)
        reduced = obs.observed() if obs is not None else None
        if reduced is not None and reduced.y.shape[0] == 0:
            reduced = None
        N = forecast.shape[0]
        prior = self.normalizer.normalize(forecast).reshape(N, -1)
        z = _randn(prior.shape, prior, self.generator)
        if self.standardize_init:
            z = (z - z.mean(0)) / z.std(0).clamp_min(torch.finfo(z.dtype).tiny)
        dt = 1.0 / self.steps
        clipped = 0
        for t, h in zip(self.times, self._h):
            score = self.prior_score(z, prior, t)
            if reduced is not None and h != 0.0:
                _, grad = _log_likelihood_and_grad(reduced, z, self.normalizer, state_shape)
                score = score + h * grad
            if math.isfinite(self.score_clip):
                clipped += int((score.abs() > self.score_clip).sum())
                score = score.clamp(-self.score_clip, self.score_clip)
            b, s2 = self.drift(t), self.diffusion2(t)
            if self.solver == "em":
                noise = _randn(z.shape, z, self.generator)
                z = z - dt * (b * z - s2 * score) + math.sqrt(dt * s2) * noise
            else:
                z = z - dt * (b * z - 0.5 * s2 * score)
        if not torch.isfinite(z).all():
            raise FloatingPointError(
                "EnSF analysis produced non-finite states; normalise the state (mean/std), "
                "increase steps or lower score_clip (docs/baselines.md)"
            )
        xa = self.normalizer.denormalize(z.reshape(forecast.shape))
        xa = inflate(xa, self.inflation)
        total = self.steps * z.numel()
        return xa, {"clipped": clipped, "clipped_fraction": clipped / total}

    # ---------------------------------------------------------------- protocol
    def init(self, particles: Tensor) -> Ensemble:
        check_particles(particles)
        self.normalizer.check(tuple(particles.shape[1:]))
        return Ensemble(particles.clone(), uniform_log_weights(particles.shape[0]))

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        _, xa, info = self._forecast_analysis_step(
            ensemble, obs, self.update, extra={"clipped": 0, "clipped_fraction": 0.0}
        )
        return Ensemble(xa, uniform_log_weights(ensemble.size)), info
