r"""Training of diffusion emulators: denoising loss, EMA, checkpoints and resume
(docs/method.md#diffusion-emulator; docs/training.md).

Given consecutive pairs :math:`(x^k, x^{k+1})`, :func:`train_emulator` fits a conditional
EDM-preconditioned denoiser (:mod:`genfilter.emulators.networks`) by minimising the
denoising score-matching loss of Savary, Rozet & Louppe (2026, Eq. 14) on the *target*
:math:`u = \mathrm{to\_target}(x^{k+1}, x^k)` with condition
:math:`c = \mathrm{condition}(x^k)` (see :class:`~genfilter.emulators.diffusion.
DiffusionEmulator`):

.. math:: \mathcal{L}(\theta) = \mathbb{E}_{t \sim p(t),\, z \sim \mathcal{N}(0, I)}
    \Big[ \lambda_t \, \big\| d_\theta(\alpha_t u + \sigma_t z, t \mid c) - u \big\|^2 \Big],
    \qquad \lambda_t = \frac{\alpha_t^2 + \sigma_t^2}{\sigma_t^2},

which is azula's :meth:`~azula.denoise.KarrasDenoiser.loss` with the noise drawn from an
explicit generator (so that a resumed run is bit-identical).  With the Karras
preconditioning, :math:`\lambda_t c_\mathrm{out}^2 = 1`: every noise level has the same
weight on the backbone's output, and :math:`p(t)` alone decides where the training effort
goes: DEFAULT EDM's log-normal :math:`\log(\sigma_t/\alpha_t) \sim \mathcal{N}(-1.2,
1.2^2)`, or uniform :math:`t` (the samplers' time grid); see :class:`TrainingConfig`.

Optimiser AdamW, gradient-norm clipping, exponential moving average (EMA) of the weights
(the EMA weights are the ones validated, saved and returned), validation loss on fixed
noise (comparable across epochs), a tqdm progress bar, periodic checkpoints and
``resume=True``.

With ``family="interpolant"`` the same loop fits the velocity of a stochastic interpolant
instead (Chen et al. 2024; :func:`~genfilter.emulators.interpolant.velocity_loss`,
:math:`s \sim \mathcal{U}(0, 1)`) and returns a
:class:`~genfilter.emulators.interpolant.StochasticInterpolantEmulator`.

Checkpoint format ``"genfilter-emulator/1"`` (a dict; loads with
``torch.load(path, weights_only=True)``)::

    format           "genfilter-emulator/1"
    denoiser_config  networks.denoiser_config(...) dict: rebuilds the architecture
                     (interpolant.velocity_config(...) for the interpolant family)
    family           "interpolant" (absent: a diffusion emulator)
    interpolant      Interpolant.config() (interpolant family only)
    emulator_config  {state_shape, mean, std, residual, residual_std} (lists / floats / bool)
    state_dict       EMA weights of the denoiser
    train_state      {epoch, step, ema_updates, model, optimizer, generator, config} or None
    history          {epoch, train_loss, lr, seconds, valid_epoch, valid_loss}
    meta             {seed, epochs, stats, n_train, n_valid, versions, ...}

References:
    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028

    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364

    | Probabilistic Forecasting with Stochastic Interpolants and Föllmer Processes
    | (Chen et al., 2024), https://arxiv.org/abs/2403.13724
"""

from __future__ import annotations

__all__ = [
    "FORMAT",
    "FAMILIES",
    "TrainingConfig",
    "TrainResult",
    "normalisation_stats",
    "denoising_loss",
    "draw_times",
    "time_of_log_ratio",
    "train_emulator",
    "save_emulator",
    "load_checkpoint",
    "load_emulator",
]

import copy
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from azula.denoise import Denoiser
from azula.noise import Schedule
from torch import Tensor
from tqdm.auto import tqdm

from .base import check_states
from .diffusion import DiffusionEmulator
from .guidance import time_of_log_ratio
from .interpolant import (
    Interpolant,
    StochasticInterpolantEmulator,
    build_velocity_from_config,
    velocity_config,
    velocity_loss,
)
from .networks import build_denoiser_from_config
from .networks import denoiser_config as _validate_denoiser_config

FORMAT = "genfilter-emulator/1"
FAMILIES = ("diffusion", "interpolant")
STATS = ("per_component", "per_channel", "scalar")
LR_SCHEDULES = ("constant", "cosine")
TIME_SAMPLING = ("lognormal", "uniform")
_EMULATOR_KEYS = ("state_shape", "mean", "std", "residual", "residual_std")


# ---------------------------------------------------------------------------- config
@dataclass
class TrainingConfig:
    r"""Hyper-parameters of :func:`train_emulator`; validated on construction (errors name
    the field and the value).

    Attributes:
        epochs: Number of passes over the training pairs (a resumed run continues up to it).
        batch_size: Pairs per optimisation step.
        lr: AdamW learning rate (peak value for ``lr_schedule="cosine"``).
        weight_decay: AdamW decoupled weight decay.
        ema_decay: EMA decay per step in ``[0, 1)``; ``0`` keeps the raw weights.
        ema_warmup: Use ``min(ema_decay, (1 + n) / (10 + n))`` at update ``n``, so that
            short runs are not dominated by the initial weights.
        grad_clip: Maximal global gradient norm, or ``None`` for no clipping.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 over ``epochs``; depends
            on ``epochs``, so extending a run on resume changes it).
        time_sampling: Distribution of the diffusion time of a training sample:
            ``"lognormal"`` (EDM: :math:`\log(\sigma_t/\alpha_t) \sim
            \mathcal{N}(\text{lognormal\_mean}, \text{lognormal\_std}^2)`, mapped to
            :math:`t` through the schedule and clipped to :math:`[0, 1]`) or ``"uniform"``
            (:math:`t \sim \mathcal{U}(0, 1)`, the samplers' time grid).  DEFAULT lognormal:
            on stochastic Lorenz-63 it gave a one-step spread much closer to the simulator's
            at the same training cost (docs/training.md).
        lognormal_mean, lognormal_std: Parameters of ``"lognormal"`` (EDM: -1.2, 1.2).
        seed: Seeds the initial weights, the shuffling, the diffusion times and noises.
        valid_every: Validate every this many epochs (and after the last one).
        checkpoint_every: Save a checkpoint every this many epochs (and after the last one).
        device: Torch device of the training (``"cpu"``, ``"cuda"``, ...).
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    grad_clip: float | None = 1.0
    lr_schedule: str = "constant"
    time_sampling: str = "lognormal"
    lognormal_mean: float = -1.2
    lognormal_std: float = 1.2
    seed: int = 0
    valid_every: int = 1
    checkpoint_every: int = 10
    device: str = "cpu"

    def __post_init__(self) -> None:
        def integer(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"TrainingConfig.{name} must be an integer >= {low}, got {v!r}")

        def real(name: str, ok, what: str) -> None:
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or not ok(v)
            ):
                raise ValueError(f"TrainingConfig.{name} must be {what}, got {v!r}")
            setattr(self, name, float(v))

        integer("epochs", 1)
        integer("batch_size", 1)
        integer("seed", 0)
        integer("valid_every", 1)
        integer("checkpoint_every", 1)
        real("lr", lambda v: v > 0, "a positive finite number")
        real("weight_decay", lambda v: v >= 0, "a finite number >= 0")
        real("ema_decay", lambda v: 0 <= v < 1, "in [0, 1)")
        real("lognormal_mean", lambda v: True, "a finite number")
        real("lognormal_std", lambda v: v > 0, "a positive finite number")
        if self.grad_clip is not None:
            real("grad_clip", lambda v: v > 0, "a positive finite number or None")
        if not isinstance(self.ema_warmup, bool):
            raise ValueError(f"TrainingConfig.ema_warmup must be a bool, got {self.ema_warmup!r}")
        if self.time_sampling not in TIME_SAMPLING:
            raise ValueError(
                f"TrainingConfig.time_sampling must be one of {TIME_SAMPLING}, "
                f"got {self.time_sampling!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainingConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"TrainingConfig.device must name a torch device, got {self.device!r}"
            ) from None
        self.device = str(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainingConfig field(s) {unknown}")
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train_emulator` returns.

    Attributes:
        emulator: The trained :class:`DiffusionEmulator` or
            :class:`~genfilter.emulators.interpolant.StochasticInterpolantEmulator` (EMA
            weights, eval mode, parameters frozen).
        history: Per-epoch ``train_loss``, ``lr``, ``seconds`` (``epoch``) and validation
            losses ``valid_loss`` at ``valid_epoch`` (0 = before training).
        checkpoint: Path of the last checkpoint written, or ``None``.
        epoch: Epochs completed.
        denoiser_config, emulator_config: As stored in the checkpoint.
    """

    emulator: DiffusionEmulator | StochasticInterpolantEmulator
    history: dict[str, list]
    checkpoint: Path | None
    epoch: int
    denoiser_config: dict[str, Any] = field(default_factory=dict)
    emulator_config: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- statistics
def _compact(v: Tensor) -> float | list:
    """A statistic as a float when it is constant, else as a nested list."""
    v = v.to(torch.float64)
    if bool((v == v.flatten()[0]).all()):
        return float(v.flatten()[0])
    return v.tolist()


def normalisation_stats(
    x_prev: Tensor, x_next: Tensor, *, stats: str = "per_component", residual: bool = False
) -> dict[str, Any]:
    r"""Normalisation of the emulator (docs/method.md#diffusion-emulator) from training pairs.

    ``mean``/``std`` of the states (both members of every pair) reduced over the batch and

    * ``"per_component"``: nothing else (one value per state component, Lorenz systems);
    * ``"per_channel"``: all axes but the first of the state (fields ``(C, H, W)``);
    * ``"scalar"``: every axis (one number; a field on a homogeneous torus).

    ``residual_std`` is the std of the normalised increment
    :math:`(x^{k+1} - x^k)/s` with the same reduction (``1.0`` when ``residual`` is off).
    A zero std is replaced by 1 (a constant component is left unscaled).

    Returns a dict ``{state_shape, mean, std, residual, residual_std}`` of lists / floats,
    the ``emulator_config`` of a checkpoint.
    """
    if stats not in STATS:
        raise ValueError(f"stats must be one of {STATS}, got {stats!r}")
    shape = tuple(x_prev.shape[1:])
    if stats == "per_component":
        dims: tuple[int, ...] = (0,)
    elif stats == "per_channel":
        if len(shape) < 2:
            raise ValueError(f"stats='per_channel' needs states (C, ...), got shape {shape}")
        dims = (0, *range(2, len(shape) + 1))
    else:
        dims = tuple(range(len(shape) + 1))

    def moments(chunks) -> tuple[Tensor, Tensor]:
        # Chan et al.'s pairwise update of (count, mean, M2), chunk by chunk in float64:
        # stable, and memory stays O(chunk) for large field datasets.
        n, mean, m2 = 0, None, None
        for x in chunks:
            x = x.to(torch.float64)
            k = x.numel() // _numel_kept(x, dims)
            var_c, mean_c = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
            if mean is None:
                n, mean, m2 = k, mean_c, var_c * k
                continue
            delta = mean_c - mean
            total = n + k
            mean = mean + delta * (k / total)
            m2 = m2 + var_c * k + delta.square() * (n * k / total)
            n = total
        std = torch.sqrt(m2 / max(n - 1, 1))
        std = torch.where(std > 0, std, torch.ones_like(std))
        return mean[0], std[0]

    size = 4096

    def pieces(*xs: Tensor):
        for x in xs:
            for i in range(0, x.shape[0], size):
                yield x[i : i + size]

    mean, std = moments(pieces(x_prev, x_next))
    rstd = torch.ones_like(std)
    if residual:
        increments = (
            (x_next[i : i + size].to(torch.float64) - x_prev[i : i + size].to(torch.float64)) / std
            for i in range(0, x_prev.shape[0], size)
        )
        _, rstd = moments(increments)
    return {
        "state_shape": list(shape),
        "mean": _compact(mean),
        "std": _compact(std),
        "residual": bool(residual),
        "residual_std": _compact(rstd),
    }


def _numel_kept(x: Tensor, dims: tuple[int, ...]) -> int:
    """Number of entries of ``x`` that survive a reduction over ``dims``."""
    kept = 1
    for d in range(x.ndim):
        if d not in dims:
            kept *= x.shape[d]
    return kept


def _emulator_from(
    denoiser: Denoiser, emulator_config: dict[str, Any], interpolant: dict | None = None, **kwargs
) -> DiffusionEmulator | StochasticInterpolantEmulator:
    c = emulator_config
    as_t = lambda v: torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else float(v)  # noqa: E731
    cls = DiffusionEmulator
    if interpolant is not None:  # the interpolant family: ``denoiser`` is a velocity network
        cls = StochasticInterpolantEmulator
        kwargs = {"interpolant": Interpolant(**interpolant), **kwargs}
    return cls(
        denoiser,
        c["state_shape"],
        mean=as_t(c["mean"]),
        std=as_t(c["std"]),
        residual=bool(c["residual"]),
        residual_std=as_t(c["residual_std"]),
        **kwargs,
    )


# ---------------------------------------------------------------------------- loss
def denoising_loss(denoiser: Denoiser, u: Tensor, t: Tensor, z: Tensor, **kwargs) -> Tensor:
    r"""Per-sample denoising loss of Savary et al. (2026, Eq. 14) with the EDM weighting of
    Karras et al. (2022) (azula ``KarrasDenoiser.loss`` with explicit
    noise):

    .. math:: \ell_i = \frac{1}{|S|} \sum \lambda_{t_i}
        \big( d_\theta(\alpha_{t_i} u_i + \sigma_{t_i} z_i, t_i \mid c_i) - u_i \big)^2,
        \quad \lambda_t = \alpha_t^2/\sigma_t^2 + 1 .

    Arguments:
        denoiser: An azula denoiser with a ``schedule``.
        u: Clean targets ``(B, *S)``; t: times ``(B,)``; z: standard noise ``(B, *S)``.
        kwargs: Passed to the denoiser (``cond=``).

    Returns:
        ``(B,)``; its mean equals ``denoiser.loss(u, t, **kwargs)`` for the same noise.
    """
    alpha, sigma = denoiser.schedule(t)
    alpha = alpha.reshape(-1, *(1,) * (u.ndim - 1))
    sigma = sigma.reshape(-1, *(1,) * (u.ndim - 1))
    u_t = alpha * u + sigma * z
    mean = denoiser(u_t, t, **kwargs).mean
    w = (alpha / sigma) ** 2 + 1
    return (w * (mean - u).square()).flatten(1).mean(dim=1)


def draw_times(
    n: int, generator: torch.Generator, schedule: Schedule, config: TrainingConfig
) -> Tensor:
    r"""Diffusion times of a training batch, ``(n,)`` float32 on the CPU, drawn from
    ``generator`` as ``config.time_sampling`` says (see :class:`TrainingConfig`)."""
    if config.time_sampling == "uniform":
        return torch.rand(n, generator=generator)
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    log_ratio = config.lognormal_mean + config.lognormal_std * z
    return time_of_log_ratio(schedule, log_ratio).float()


# ---------------------------------------------------------------------------- checkpoints
def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _atomic_save(obj: dict, path: Path) -> None:
    """Writes to a temporary file, then renames: an interrupted save never leaves a
    truncated checkpoint behind (resume relies on it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import azula

    from .._version import __version__

    return {
        "genfilter": str(__version__),
        "torch": str(torch.__version__),
        "azula": str(getattr(azula, "__version__", "unknown")),
    }


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Loads a ``genfilter-emulator/1`` checkpoint with ``weights_only=True`` and checks
    its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before failing
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a readable genfilter checkpoint ({type(exc).__name__}: truncated, "
            "damaged, or not a weights-only torch file)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a {FORMAT!r} checkpoint (format {got!r})")
    missing = [k for k in ("denoiser_config", "emulator_config", "state_dict") if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}")
    return ckpt


def checkpoint_system(path: str | os.PathLike) -> tuple[str | None, dict[str, Any]]:
    """The system a checkpoint was trained for, as recorded by ``genfilter train``:
    ``(name or None, constructor keywords)``."""
    meta = load_checkpoint(path).get("meta", {})
    kwargs = meta.get("system_kwargs", "{}")
    try:
        kwargs = json.loads(kwargs) if isinstance(kwargs, str) else dict(kwargs)
    except (TypeError, ValueError):
        kwargs = {}
    return meta.get("system"), kwargs


def annotate_checkpoint(path: str | os.PathLike, **meta: Any) -> None:
    """Records facts about a checkpoint (its system, dataset, command) in its ``meta``,
    atomically."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    ckpt.setdefault("meta", {}).update(meta)
    _atomic_save(ckpt, path)


def checkpoint_family(ckpt: dict) -> str:
    """The emulator family of a loaded checkpoint dict: ``"diffusion"`` (also for
    checkpoints written before families existed) or ``"interpolant"``."""
    family = ckpt.get("family", "diffusion")
    if family not in FAMILIES:
        raise ValueError(f"checkpoint family must be one of {FAMILIES}, got {family!r}")
    if family == "interpolant" and not isinstance(ckpt.get("interpolant"), dict):
        raise ValueError("checkpoint of the interpolant family lacks its 'interpolant' config")
    return family


def load_emulator(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    **emulator_kwargs: Any,
) -> DiffusionEmulator | StochasticInterpolantEmulator:
    """Rebuilds the trained emulator of a checkpoint: the denoiser from ``denoiser_config``
    with the EMA weights, wrapped in a :class:`DiffusionEmulator` with the stored
    normalisation (or, for a checkpoint of the interpolant family, the velocity network in
    a :class:`~genfilter.emulators.interpolant.StochasticInterpolantEmulator` with the
    stored interpolant); in eval mode, parameters frozen.

    Arguments:
        path: Checkpoint file.
        map_location: Device of the weights.
        emulator_kwargs: Sampling options of :class:`DiffusionEmulator` (``sampler``,
            ``steps``, ``eta``, ``solver``, ``iterations``, ``chunk_size``, ...) or of
            :class:`~genfilter.emulators.interpolant.StochasticInterpolantEmulator`
            (``steps``, ``diffusion``, ``covariance``, ``chunk_size``, ...).
    """
    fixed = sorted(set(emulator_kwargs) & {"denoiser", "velocity", "interpolant", *_EMULATOR_KEYS})
    if fixed:
        raise TypeError(f"{fixed} come from the checkpoint and cannot be overridden")
    ckpt = load_checkpoint(path, map_location)
    family = checkpoint_family(ckpt)
    build = build_velocity_from_config if family == "interpolant" else build_denoiser_from_config
    with torch.random.fork_rng(devices=[]):  # building initialises weights from the global RNG
        denoiser = build(ckpt["denoiser_config"])
    denoiser.load_state_dict(ckpt["state_dict"])
    denoiser.to(map_location)
    emulator = _emulator_from(
        denoiser, ckpt["emulator_config"], ckpt.get("interpolant"), **emulator_kwargs
    )
    emulator.to(map_location)
    emulator.eval().requires_grad_(False)
    return emulator


def save_emulator(
    emulator: DiffusionEmulator | StochasticInterpolantEmulator,
    path: str | os.PathLike,
    *,
    denoiser_config: dict[str, Any] | None = None,
    history: dict[str, list] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Saves a :class:`DiffusionEmulator` whose denoiser was built by
    :func:`~genfilter.emulators.networks.build_denoiser` (or a
    :class:`~genfilter.emulators.interpolant.StochasticInterpolantEmulator` whose velocity
    was built by :func:`~genfilter.emulators.interpolant.build_velocity`) as a
    ``genfilter-emulator/1`` checkpoint without training state (not resumable).
    ``denoiser_config`` defaults to ``emulator.denoiser.denoiser_config`` (resp.
    ``emulator.velocity.velocity_config``)."""
    interpolant = isinstance(emulator, StochasticInterpolantEmulator)
    network = emulator.velocity if interpolant else emulator.denoiser
    attr = "velocity_config" if interpolant else "denoiser_config"
    config = denoiser_config or getattr(network, attr, None)
    if interpolant and not isinstance(network, nn.Module):
        raise TypeError("only a velocity network (an nn.Module) can be saved, not a callable")
    if config is None:
        raise ValueError(
            "the emulator's denoiser carries no denoiser_config (build it with "
            "networks.build_denoiser) and none was given"
        )
    emulator_config = {
        "state_shape": list(emulator.state_shape),
        "mean": _compact(emulator.state_mean),
        "std": _compact(emulator.state_std),
        "residual": bool(emulator.residual),
        "residual_std": _compact(emulator.residual_std),
    }
    path = Path(path)
    ckpt = {
        "format": FORMAT,
        "denoiser_config": dict(config),
        "emulator_config": emulator_config,
        "state_dict": _cpu_state(network),
        "train_state": None,
        "history": dict(history or {}),
        "meta": {**(meta or {}), "versions": _versions()},
    }
    if interpolant:
        ckpt.update(family="interpolant", interpolant=emulator.interpolant.config())
    _atomic_save(ckpt, path)
    return path


# ---------------------------------------------------------------------------- training
def _check_compatible(
    ckpt: dict,
    family: str,
    icfg: dict | None,
    dcfg: dict[str, Any],
    residual: bool,
    stats: str,
    action: str,
) -> None:
    """Raises ``ValueError`` (``"cannot <action>: ..."``) unless a loaded checkpoint has the
    given family, interpolant, denoiser config, residual flag and normalisation reduction."""
    if checkpoint_family(ckpt) != family or ckpt.get("interpolant") != icfg:
        raise ValueError(
            f"cannot {action}: family/interpolant differ from the checkpoint's "
            f"({checkpoint_family(ckpt)}, {ckpt.get('interpolant')} vs {family}, {icfg})"
        )
    if ckpt["denoiser_config"] != dcfg:
        raise ValueError(
            f"cannot {action}: denoiser_config differs from the checkpoint's "
            f"({ckpt['denoiser_config']} vs {dcfg})"
        )
    if (
        bool(ckpt["emulator_config"]["residual"]) != bool(residual)
        or ckpt.get("meta", {}).get("stats") != stats
    ):
        raise ValueError(
            f"cannot {action}: residual/stats differ from the checkpoint's "
            f"(residual={ckpt['emulator_config']['residual']}, "
            f"stats={ckpt.get('meta', {}).get('stats')})"
        )


def _same_normalisation(a: dict[str, Any], b: dict[str, Any], rtol: float = 1e-4) -> bool:
    """Whether two emulator configs have the same shape, flags and statistics (to ``rtol``)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, (int, float, list)) and not isinstance(x, bool):
            tx = torch.as_tensor(x, dtype=torch.float64)
            ty = torch.as_tensor(y, dtype=torch.float64)
            if tx.shape != ty.shape or not torch.allclose(tx, ty, rtol=rtol, atol=1e-12):
                return False
        elif x != y:
            return False
    return True


def _check_pairs(x_prev: Tensor, x_next: Tensor, shape: tuple[int, ...], what: str) -> None:
    check_states(x_prev, shape, f"{what} x_prev")
    check_states(x_next, shape, f"{what} x_next")
    if x_prev.shape[0] != x_next.shape[0]:
        raise ValueError(
            f"{what} x_prev and x_next must hold the same number of pairs, got "
            f"{x_prev.shape[0]} and {x_next.shape[0]}"
        )


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def train_emulator(
    x_prev: Tensor,
    x_next: Tensor,
    *,
    denoiser_config: dict[str, Any],
    valid: tuple[Tensor, Tensor] | None = None,
    residual: bool = False,
    stats: str = "per_component",
    config: TrainingConfig | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    emulator_kwargs: dict[str, Any] | None = None,
    family: str = "diffusion",
    interpolant: Interpolant | None = None,
    init: str | os.PathLike | None = None,
) -> TrainResult:
    r"""Trains a diffusion emulator of :math:`p(x^{k+1} \mid x^k)` on consecutive pairs
    (Savary et al. 2026, Eq. 14; docs/method.md#diffusion-emulator).

    Arguments:
        x_prev, x_next: Training pairs ``(P, *S)`` in physical units.
        denoiser_config: Architecture (:func:`~genfilter.emulators.networks.denoiser_config`);
            its ``state_shape`` must be ``S``.
        valid: Validation pairs ``(x_prev_v, x_next_v)``; their loss is evaluated on
            fixed times and noises (comparable across epochs) with the EMA weights.
        residual: Target the normalised increment (GenCast style, Price et al. 2025; on for
            fields, off for Lorenz).
        stats: Normalisation reduction, see :func:`normalisation_stats`.
        config: :class:`TrainingConfig` (defaults if ``None``).
        out: Checkpoint file written every ``config.checkpoint_every`` epochs and at the
            end (``None``: none).
        resume: Continue from ``out`` if it exists (weights, optimiser, EMA, RNG state and
            history; the same final weights as an uninterrupted run with the same config);
            if it does not exist, start afresh.
        progress: Show a tqdm progress bar.
        emulator_kwargs: Sampling options of the returned emulator.
        family: ``"diffusion"`` (a denoiser, Savary et al. 2026, Eq. 14) or
            ``"interpolant"`` (a velocity fitted by
            :func:`~genfilter.emulators.interpolant.velocity_loss` with :math:`s \sim
            \mathcal{U}(0, 1)`, Chen et al. 2024; ``config.time_sampling`` then does not
            apply; ``denoiser_config``'s noise-schedule entries are dropped).
        interpolant: The :class:`~genfilter.emulators.interpolant.Interpolant` of the
            interpolant family (default ``Interpolant()``: :math:`\beta_s = s^2`,
            :math:`\varepsilon = 1`).
        init: Start from the weights of this checkpoint (fine-tuning, e.g. a shipped
            emulator on more data): its EMA weights initialise the trained and the EMA
            network, and its normalisation statistics are kept (the weights were fitted in
            those units; statistics recomputed from other data would shift them). Its
            family, ``denoiser_config``, ``residual`` and ``stats`` must be the ones given.
            The optimiser, learning-rate schedule and EMA count start afresh. A resumed
            run (``resume=True`` with ``out`` present) continues from ``out`` instead and
            checks it against the same statistics.

    Returns:
        A :class:`TrainResult`.
    """
    config = TrainingConfig() if config is None else config
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    if not isinstance(denoiser_config, dict):
        raise TypeError(f"denoiser_config must be a dict, got {type(denoiser_config).__name__}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    icfg = None
    if family == "interpolant":
        interpolant = Interpolant() if interpolant is None else interpolant
        if not isinstance(interpolant, Interpolant):
            raise TypeError(f"interpolant must be an Interpolant, got {type(interpolant).__name__}")
        interpolant.check()
        icfg = interpolant.config()
    elif interpolant is not None:
        raise ValueError("interpolant= applies to family='interpolant' only")
    dcfg = dict(denoiser_config)
    if icfg is None:
        dcfg = _validate_denoiser_config(
            dcfg.pop("kind", None), dcfg.pop("state_shape", ()), **dcfg
        )
    else:
        for key in ("schedule", "sigma_min", "sigma_max", "alpha_min"):
            dcfg.pop(key, None)
        dcfg = velocity_config(dcfg.pop("kind", None), dcfg.pop("state_shape", ()), **dcfg)
    shape = tuple(dcfg["state_shape"])
    _check_pairs(x_prev, x_next, shape, "training")
    if x_prev.shape[0] < 2:
        raise ValueError(f"need at least 2 training pairs, got {x_prev.shape[0]}")
    if valid is not None:
        if not (isinstance(valid, (tuple, list)) and len(valid) == 2):
            raise TypeError("valid must be a pair (x_prev_valid, x_next_valid) or None")
        _check_pairs(valid[0], valid[1], shape, "validation")
    if resume and out is None:
        raise ValueError("resume=True needs a checkpoint path out=")
    out_path = None if out is None else Path(out)
    device = torch.device(config.device)

    # ---- normalisation and state: fresh, from the init checkpoint or from out (resume)
    start = None
    if init is not None:
        start = load_checkpoint(init)
        _check_compatible(start, family, icfg, dcfg, residual, stats, f"start from {init}")
        ecfg = start["emulator_config"]
    else:
        ecfg = normalisation_stats(x_prev, x_next, stats=stats, residual=residual)
    ckpt = None
    if resume and out_path is not None and out_path.is_file():
        ckpt = load_checkpoint(out_path)
        if ckpt.get("train_state") is None:
            raise ValueError(f"checkpoint {out_path} has no training state to resume from")
        _check_compatible(ckpt, family, icfg, dcfg, residual, stats, "resume")
        if not _same_normalisation(ckpt["emulator_config"], ecfg):
            raise ValueError(
                f"cannot resume from {out}: the training data's normalisation differs from the "
                "checkpoint's, so it was trained on other data; use another output file or "
                "resume=False (--no-resume) to start afresh"
            )
        ecfg = ckpt["emulator_config"]

    build = build_denoiser_from_config if icfg is None else build_velocity_from_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build(dcfg)
    if start is not None and ckpt is None:
        model.load_state_dict(start["state_dict"])
    ema = copy.deepcopy(model)
    model.to(device).train()
    ema.to(device).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    emulator = _emulator_from(ema, ecfg, icfg, **(emulator_kwargs or {})).to(device)

    def loss_of(net: nn.Module, u: Tensor, c: Tensor, a: Tensor, t: Tensor, z: Tensor) -> Tensor:
        if icfg is None:
            return denoising_loss(net, u, t, z, cond=c)
        return velocity_loss(net, emulator.interpolant, a, u, c, t, z)

    n_train = x_prev.shape[0]
    batches = math.ceil(n_train / config.batch_size)
    total_steps = config.epochs * batches
    history: dict[str, list] = {"epoch": [], "train_loss": [], "lr": [], "seconds": []}
    if valid is not None:
        history.update(valid_epoch=[], valid_loss=[])
    epoch = step = ema_updates = 0
    if ckpt is not None:
        ts = ckpt["train_state"]
        model.load_state_dict(ts["model"])
        ema.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ts["optimizer"])
        generator.set_state(ts["generator"])
        epoch, step, ema_updates = int(ts["epoch"]), int(ts["step"]), int(ts["ema_updates"])
        history = {k: list(v) for k, v in ckpt["history"].items()}

    # ---- fixed validation set: targets, stratified times and noises drawn once
    if valid is not None:
        gv = torch.Generator().manual_seed(config.seed + 1)
        with torch.no_grad():
            u_v = emulator.to_target(valid[1].to(device), valid[0].to(device)).float()
            c_v = emulator.condition(valid[0].to(device)).float()
            a_v = None if icfg is None else emulator.start(valid[0].to(device)).float()
        n_v = u_v.shape[0]
        t_v = ((torch.randperm(n_v, generator=gv) + torch.rand(n_v, generator=gv)) / n_v).to(device)
        z_v = torch.randn(u_v.shape, generator=gv).to(device)

    def validate() -> float:
        total = 0.0
        with torch.no_grad():
            for i in range(0, n_v, config.batch_size):
                sl = slice(i, i + config.batch_size)
                a = None if a_v is None else a_v[sl]
                total += float(loss_of(ema, u_v[sl], c_v[sl], a, t_v[sl], z_v[sl]).sum())
        return total / n_v

    def lr_at(k: int) -> float:
        if config.lr_schedule == "cosine":
            return config.lr * 0.5 * (1 + math.cos(math.pi * min(k, total_steps) / total_steps))
        return config.lr

    def meta() -> dict[str, Any]:
        return {
            "seed": config.seed,
            "epochs": config.epochs,
            "epochs_done": epoch,
            "steps": step,
            "stats": stats,
            "n_train": n_train,
            "n_valid": 0 if valid is None else int(valid[0].shape[0]),
            "time_sampling": config.time_sampling if icfg is None else "uniform",
            "loss": "karras (Karras et al. 2022, arXiv:2206.00364)"
            if icfg is None
            else "velocity (Chen et al. 2024, arXiv:2403.13724)",
            "versions": _versions(),
            **({} if init is None else {"init": str(init)}),
        }

    def save() -> None:
        family_keys = {} if icfg is None else {"family": family, "interpolant": icfg}
        _atomic_save(
            {
                **family_keys,
                "format": FORMAT,
                "denoiser_config": dcfg,
                "emulator_config": ecfg,
                "state_dict": _cpu_state(ema),
                "train_state": {
                    "epoch": epoch,
                    "step": step,
                    "ema_updates": ema_updates,
                    "model": _cpu_state(model),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "config": config.to_dict(),
                },
                "history": history,
                "meta": meta(),
            },
            out_path,
        )

    if valid is not None and not history["valid_epoch"]:
        history["valid_epoch"].append(0)
        history["valid_loss"].append(validate())

    bar = tqdm(
        total=max(total_steps, step),
        initial=step,
        disable=not progress,
        unit="batch",
        desc="train emulator",
        dynamic_ncols=True,
    )
    try:
        while epoch < config.epochs:
            t0 = time.perf_counter()
            perm = torch.randperm(n_train, generator=generator)
            running = 0.0
            for b in range(batches):
                idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
                xp, xn = x_prev[idx].to(device), x_next[idx].to(device)
                with torch.no_grad():
                    u = emulator.to_target(xn, xp).float()
                    c = emulator.condition(xp).float()
                if icfg is None:
                    t = draw_times(idx.shape[0], generator, model.schedule, config).to(device)
                    a = None
                else:
                    t = torch.rand(idx.shape[0], generator=generator).to(device)
                    with torch.no_grad():
                        a = emulator.start(xp).float()
                z = torch.randn(u.shape, generator=generator).to(device)
                loss = loss_of(model, u, c, a, t, z).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite training loss at epoch {epoch + 1}, step {step + 1}; "
                        "lower TrainingConfig.lr or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                lr = lr_at(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.step()
                decay = config.ema_decay
                if config.ema_warmup:
                    decay = min(decay, (1 + ema_updates) / (10 + ema_updates))
                _ema_update(ema, model, decay)
                ema_updates += 1
                step += 1
                running += float(loss.detach())
                bar.update(1)
            epoch += 1
            history["epoch"].append(epoch)
            history["train_loss"].append(running / batches)
            history["lr"].append(lr)
            history["seconds"].append(time.perf_counter() - t0)
            postfix = {"epoch": epoch, "loss": f"{running / batches:.4f}"}
            if valid is not None and (epoch % config.valid_every == 0 or epoch == config.epochs):
                history["valid_epoch"].append(epoch)
                history["valid_loss"].append(validate())
                postfix["valid"] = f"{history['valid_loss'][-1]:.4f}"
            bar.set_postfix(postfix)
            if out_path is not None and (
                epoch % config.checkpoint_every == 0 or epoch == config.epochs
            ):
                save()
    finally:
        bar.close()

    emulator.eval().requires_grad_(False)
    return TrainResult(
        emulator=emulator,
        history=history,
        checkpoint=out_path,  # the last epoch is always saved (or was, before a resume)
        epoch=epoch,
        denoiser_config=dcfg,
        emulator_config=ecfg,
    )
