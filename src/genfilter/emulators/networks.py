r"""Backbones of the diffusion emulators and the preconditioned denoiser that wraps them
(docs/method.md#diffusion-emulator).

A backbone :math:`b_\theta(c_\mathrm{in} u_t, c_\mathrm{time} \mid c)` receives the scaled
noisy target, the noise level :math:`c_\mathrm{time} = \log(\sigma_t / \alpha_t)` and the
normalised previous state ``cond`` (the keyword that :class:`~genfilter.emulators.diffusion.
DiffusionEmulator` passes through).  azula's :class:`~azula.denoise.KarrasDenoiser` turns it
into a denoiser with EDM preconditioning

.. math:: d_\theta(u_t, t \mid c) = c_\mathrm{skip}(t)\, u_t
    + c_\mathrm{out}(t)\, b_\theta(c_\mathrm{in}(t)\, u_t, c_\mathrm{time}(t) \mid c) .

Two backbones:

* :class:`ResidualMLP` for flat states ``(D,)`` (Lorenz systems): the input is the
  concatenation ``[u_t, c, e(c_time)]`` (paper: residual MLP, six hidden layers);
* :class:`FieldUNet` for fields ``(C, H, W)`` or ``(H, W)`` on a periodic torus: azula's
  modulated :class:`~azula.nn.unet.UNet` with circular padding, the condition concatenated
  as extra input channels and the noise embedding as modulation.

:func:`build_denoiser` builds either from plain arguments and records them as
``denoiser.denoiser_config``, a dict of str/int/float/bool/list that
:func:`build_denoiser_from_config` turns back into the same architecture (this is what a
checkpoint stores, see :mod:`genfilter.emulators.training`).

References:
    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364

    | U-Net: Convolutional Networks for Biomedical Image Segmentation (Ronneberger et al., 2015)
    | https://arxiv.org/abs/1505.04597

    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028
"""

from __future__ import annotations

__all__ = [
    "ResidualMLP",
    "FieldUNet",
    "NoiseEmbedding",
    "KINDS",
    "SCHEDULES",
    "denoiser_config",
    "build_denoiser",
    "build_denoiser_from_config",
]

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from azula.denoise import KarrasDenoiser
from azula.nn.layers import SineEncoding
from azula.nn.unet import UNet
from azula.noise import Schedule, VESchedule, VPSchedule
from torch import Tensor

KINDS = ("mlp", "unet")
SCHEDULES = ("ve", "vp")


class NoiseEmbedding(nn.Module):
    r"""Embedding of the noise level :math:`c_\mathrm{time} = \log(\sigma_t/\alpha_t)`:
    sinusoidal features followed by a two-layer MLP.

    With the default VE schedule :math:`c_\mathrm{time} \in [\log 10^{-3}, \log 10^{2}]
    \approx [-6.9, 4.6]`; frequencies from 1 down to :math:`1/\omega = 10^{-2}` resolve
    that range without aliasing.

    Arguments:
        features: Output features ``E`` (even).
        omega: Largest wavelength factor of the sinusoidal encoding.

    Shapes: ``c_time (B,)`` or ``()`` -> ``(B, E)`` or ``(E,)``.
    """

    def __init__(self, features: int, omega: float = 1e2) -> None:
        super().__init__()
        if features < 2 or features % 2:
            raise ValueError(f"emb_features must be an even integer >= 2, got {features}")
        self.encoding = SineEncoding(features, omega=omega)
        self.mlp = nn.Sequential(
            nn.Linear(features, features), nn.SiLU(), nn.Linear(features, features)
        )

    def forward(self, c_time: Tensor) -> Tensor:
        return self.mlp(self.encoding(c_time))


def _batch_embedding(emb: Tensor, batch: int) -> Tensor:
    """``(E,)`` or ``(B, E)`` -> ``(B, E)`` (samplers call the denoiser with a scalar t)."""
    if emb.ndim == 1:
        return emb.expand(batch, -1)
    if emb.shape[0] != batch:
        raise ValueError(f"noise level has batch {emb.shape[0]}, input has batch {batch}")
    return emb


class _ResidualBlock(nn.Module):
    """``h + W2 SiLU(W1 LN(h) + E e)``: pre-norm residual block with an additive noise
    embedding (so every layer sees the noise level, not only the first)."""

    def __init__(self, hidden: int, emb_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.linear1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_features, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        y = self.act(self.linear1(self.norm(h)) + self.emb(emb))
        return h + self.linear2(y)


class ResidualMLP(nn.Module):
    r"""Residual MLP backbone for flat states (the Lorenz-63 network of Savary et al. 2026,
    §4.1: a residual network with six hidden layers).

    :math:`b(u, c_\mathrm{time} \mid c)`: input ``[u, c, e(c_time)]`` -> linear to
    ``hidden`` -> ``layers`` residual blocks (LayerNorm, SiLU, noise embedding added in
    each) -> LayerNorm, SiLU, zero-initialised linear to ``features`` (so an untrained
    :class:`~azula.denoise.KarrasDenoiser` is :math:`c_\mathrm{skip} u_t`).

    Arguments:
        features: Target features ``D``.
        cond_features: Condition features ``D_c`` (``0``: unconditional).
        hidden: Width of the hidden layers.
        layers: Number of residual blocks.
        emb_features: Width of the noise embedding.

    Shapes: ``u (B, D)``, ``c_time (B,)`` or ``()``, ``cond (B, D_c)`` -> ``(B, D)``.
    ``cond`` is cast to the dtype of ``u`` (the denoiser casts ``u`` to the module's dtype
    and the output back, but passes keywords through unchanged).
    """

    def __init__(
        self,
        features: int,
        cond_features: int,
        hidden: int = 256,
        layers: int = 6,
        emb_features: int = 64,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("features", features, 1),
            ("cond_features", cond_features, 0),
            ("hidden", hidden, 1),
            ("layers", layers, 1),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        self.features, self.cond_features = int(features), int(cond_features)
        self.embedding = NoiseEmbedding(emb_features)
        self.input = nn.Linear(features + cond_features + emb_features, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, emb_features) for _ in range(layers))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU())
        self.output = nn.Linear(hidden, features)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: Tensor, c_time: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"x must have shape (B, {self.features}), got {tuple(x.shape)}")
        emb = _batch_embedding(self.embedding(c_time.to(x.dtype)), x.shape[0])
        parts = [x]
        if self.cond_features:
            if cond is None:
                raise TypeError("ResidualMLP needs the previous state as cond=")
            if cond.shape != (x.shape[0], self.cond_features):
                raise ValueError(
                    f"cond must have shape ({x.shape[0]}, {self.cond_features}), "
                    f"got {tuple(cond.shape)}"
                )
            parts.append(cond.to(x.dtype))
        parts.append(emb)
        h = self.input(torch.cat(parts, dim=-1))
        for block in self.blocks:
            h = block(h, emb)
        return self.output(self.head(h))


class FieldUNet(nn.Module):
    r"""U-Net backbone for 2D fields on a periodic torus (the Navier–Stokes network of Savary
    et al. 2026, §4.2).

    azula's modulated :class:`~azula.nn.unet.UNet` (AdaLN-zero blocks) with
    ``periodic=True`` (circular padding in every convolution), the condition concatenated
    to the input as ``cond_channels`` extra channels, and the noise embedding
    :math:`e(c_\mathrm{time})` as modulation vector.  The last convolution is zero-initialised
    (an untrained denoiser is :math:`c_\mathrm{skip} u_t`).

    Arguments:
        channels: Channels ``C`` of the target.
        cond_channels: Channels ``C_c`` of the condition.
        hidden_channels: Channels at each depth (each further depth halves the resolution).
        hidden_blocks: Residual blocks at each depth (same length as ``hidden_channels``).
        kernel_size: Convolution kernel size.
        emb_features: Width of the noise embedding (the modulation vector).
        periodic: Circular padding (torus); ``False``: zero padding.
        norm: Normalisation in the blocks, ``"layer"``, ``"group"`` or ``"rms"``.
        quick: Small preset for tests and demos: ``hidden_channels=(16, 32)``,
            ``hidden_blocks=(1, 1)``, ``emb_features=32`` (overrides those arguments).

    Shapes: ``u (B, C, H, W)`` or ``(B, H, W)`` when ``C = 1`` (the channel axis is added
    and removed), ``cond`` likewise, ``c_time (B,)`` or ``()`` -> shape of ``u``.
    ``H`` and ``W`` must be divisible by ``2 ** (len(hidden_channels) - 1)`` (checked by
    :func:`denoiser_config`).
    """

    def __init__(
        self,
        channels: int = 1,
        cond_channels: int = 1,
        hidden_channels: Sequence[int] = (32, 64, 128),
        hidden_blocks: Sequence[int] | None = None,
        kernel_size: int = 3,
        emb_features: int = 64,
        periodic: bool = True,
        norm: str = "layer",
        quick: bool = False,
    ) -> None:
        super().__init__()
        if quick:
            hidden_channels, hidden_blocks, emb_features = (16, 32), (1, 1), 32
        hidden_channels = tuple(int(c) for c in hidden_channels)
        if hidden_blocks is None:
            hidden_blocks = (2,) * len(hidden_channels)
        hidden_blocks = tuple(int(b) for b in hidden_blocks)
        if len(hidden_blocks) != len(hidden_channels) or not hidden_channels:
            raise ValueError(
                f"hidden_blocks {hidden_blocks} and hidden_channels {hidden_channels} must "
                "be non-empty and of the same length"
            )
        if channels < 1 or cond_channels < 0:
            raise ValueError(
                f"channels must be >= 1 and cond_channels >= 0, got {channels}, {cond_channels}"
            )
        if norm not in ("layer", "group", "rms"):
            raise ValueError(f"norm must be 'layer', 'group' or 'rms', got {norm!r}")
        self.channels, self.cond_channels = int(channels), int(cond_channels)
        self.levels = len(hidden_channels)
        self.embedding = NoiseEmbedding(emb_features)
        self.unet = UNet(
            in_channels=channels,
            out_channels=channels,
            cond_channels=cond_channels,
            hid_channels=hidden_channels,
            hid_blocks=hidden_blocks,
            kernel_size=kernel_size,
            stride=2,
            spatial=2,
            periodic=periodic,
            mod_features=emb_features,
            norm=norm,
        )
        out = self.unet.ascent[-1][-1]  # the final ConvNd(hidden_channels[0] -> channels)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)

    def forward(self, x: Tensor, c_time: Tensor, cond: Tensor | None = None) -> Tensor:
        squeeze = x.ndim == 3
        if squeeze:
            if self.channels != 1:
                raise ValueError(
                    f"x of shape {tuple(x.shape)} has no channel axis but "
                    f"channels = {self.channels}"
                )
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"x must have shape (B, {self.channels}, H, W) or (B, H, W), got {tuple(x.shape)}"
            )
        if self.cond_channels:
            if cond is None:
                raise TypeError("FieldUNet needs the previous state as cond=")
            cond = cond.to(x.dtype)
            if cond.ndim == 3:
                cond = cond.unsqueeze(1)
            if cond.shape != (x.shape[0], self.cond_channels, *x.shape[2:]):
                raise ValueError(
                    f"cond must have shape ({x.shape[0]}, {self.cond_channels}, "
                    f"{x.shape[2]}, {x.shape[3]}), got {tuple(cond.shape)}"
                )
        else:
            cond = None
        emb = _batch_embedding(self.embedding(c_time.to(x.dtype)), x.shape[0])
        y = self.unet(x, emb, cond)
        return y.squeeze(1) if squeeze else y


# ---------------------------------------------------------------------------- factory
_NET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": 256, "layers": 6, "emb_features": 64},
    "unet": {
        "hidden_channels": [32, 64, 128],
        "hidden_blocks": [2, 2, 2],
        "kernel_size": 3,
        "emb_features": 64,
        "periodic": True,
        "norm": "layer",
    },
}
_QUICK_UNET = {"hidden_channels": [16, 32], "hidden_blocks": [1, 1], "emb_features": 32}


def _plain(value: Any, name: str) -> Any:
    """Converts to str/int/float/bool/list (tuples -> lists); rejects anything else."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    raise TypeError(f"{name} must be a str, int, float, bool or a list of them, got {value!r}")


def denoiser_config(
    kind: str,
    state_shape: Sequence[int],
    *,
    schedule: str = "ve",
    sigma_min: float = 1e-3,
    sigma_max: float = 1e2,
    alpha_min: float = 1e-3,
    **net_kwargs: Any,
) -> dict[str, Any]:
    r"""The complete, validated construction arguments of a denoiser, as a plain dict
    (str/int/float/bool/list) with every default filled in, so that a checkpoint rebuilds
    the same architecture even if defaults change later.

    Arguments:
        kind: ``"mlp"`` (:class:`ResidualMLP`, flat states ``(D,)``) or ``"unet"``
            (:class:`FieldUNet`, fields ``(H, W)`` or ``(C, H, W)``).
        state_shape: Shape ``S`` of one state.
        schedule: ``"ve"`` (:class:`~azula.noise.VESchedule` with
            :math:`\sigma_t \in [\sigma_{\min}, \sigma_{\max}]`, DEFAULT
            :math:`[10^{-3}, 10^{2}]`, the setting of the sampler measurements in
            docs/core.md) or ``"vp"``
            (:class:`~azula.noise.VPSchedule` with ``alpha_min``, ``sigma_min``;
            ``sigma_max`` is then unused).
        net_kwargs: Backbone arguments: for ``"mlp"`` ``hidden``, ``layers``,
            ``emb_features``; for ``"unet"`` ``hidden_channels``, ``hidden_blocks``,
            ``kernel_size``, ``emb_features``, ``periodic``, ``norm`` or ``quick=True``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        shape = [int(n) for n in state_shape]
    except TypeError:
        raise TypeError(f"state_shape must be a sequence of ints, got {state_shape!r}") from None
    if any(n < 1 for n in shape):
        raise ValueError(f"state_shape must have positive sizes, got {shape}")
    if kind == "mlp" and len(shape) != 1:
        raise ValueError(f"kind 'mlp' needs a flat state_shape (D,), got {shape}")
    if kind == "unet" and len(shape) not in (2, 3):
        raise ValueError(f"kind 'unet' needs state_shape (H, W) or (C, H, W), got {shape}")

    config: dict[str, Any] = {"kind": kind, "state_shape": shape, "schedule": schedule}
    if schedule == "ve":
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        config.update(sigma_min=float(sigma_min), sigma_max=float(sigma_max))
    elif schedule == "vp":
        if not 0 < alpha_min < 1:
            raise ValueError(f"alpha_min must be in (0, 1), got {alpha_min}")
        if not 0 < sigma_min < 1:
            raise ValueError(f"sigma_min must be in (0, 1) for the VP schedule, got {sigma_min}")
        config.update(alpha_min=float(alpha_min), sigma_min=float(sigma_min))
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")

    net = dict(_NET_DEFAULTS[kind])
    if kind == "unet" and net_kwargs.pop("quick", False):
        net.update(_QUICK_UNET)
    else:
        net_kwargs.pop("quick", None)
    unknown = sorted(set(net_kwargs) - set(net))
    if unknown:
        raise TypeError(
            f"unknown argument(s) {unknown} for kind {kind!r}; expected some of {sorted(net)}"
        )
    net.update(net_kwargs)
    if kind == "unet" and "hidden_blocks" not in net_kwargs and "hidden_channels" in net_kwargs:
        net["hidden_blocks"] = [2] * len(net["hidden_channels"])
    if kind == "unet":
        chans, blocks = list(net["hidden_channels"]), list(net["hidden_blocks"])
        if not chans or any(int(v) < 1 for v in chans + blocks):
            raise ValueError(
                f"hidden_channels {chans} and hidden_blocks {blocks} must be positive integers"
            )
        depth = 2 ** (len(chans) - 1)  # each further depth halves the grid
        if any(n % depth for n in shape[-2:]):
            raise ValueError(
                f"hidden_channels {chans} has {len(chans)} depths: the grid "
                f"{tuple(shape[-2:])} must be divisible by {depth}"
            )
    for key, value in net.items():
        config[key] = _plain(value, key)
    return config


def _schedule(config: dict[str, Any]) -> Schedule:
    if config["schedule"] == "ve":
        return VESchedule(sigma_min=config["sigma_min"], sigma_max=config["sigma_max"])
    return VPSchedule(alpha_min=config["alpha_min"], sigma_min=config["sigma_min"])


def build_backbone(config: dict[str, Any]) -> nn.Module:
    """The (untrained) backbone of a validated :func:`denoiser_config` dict: a
    :class:`ResidualMLP` for ``kind="mlp"``, else a :class:`FieldUNet` (shared by the
    denoisers and the velocity networks of stochastic interpolants)."""
    shape = config["state_shape"]
    if config["kind"] == "mlp":
        return ResidualMLP(
            shape[0],
            shape[0],
            hidden=config["hidden"],
            layers=config["layers"],
            emb_features=config["emb_features"],
        )
    c = shape[0] if len(shape) == 3 else 1
    return FieldUNet(
        channels=c,
        cond_channels=c,
        hidden_channels=config["hidden_channels"],
        hidden_blocks=config["hidden_blocks"],
        kernel_size=config["kernel_size"],
        emb_features=config["emb_features"],
        periodic=config["periodic"],
        norm=config["norm"],
    )


def build_denoiser_from_config(config: dict[str, Any]) -> KarrasDenoiser:
    """Rebuilds the (untrained) denoiser described by a :func:`denoiser_config` dict; the
    dict is re-validated and stored as ``denoiser.denoiser_config``."""
    if not isinstance(config, dict) or "kind" not in config or "state_shape" not in config:
        raise ValueError(f"not a denoiser config (needs 'kind' and 'state_shape'): {config!r}")
    kwargs = dict(config)
    config = denoiser_config(kwargs.pop("kind"), kwargs.pop("state_shape"), **kwargs)
    denoiser = KarrasDenoiser(build_backbone(config), _schedule(config))
    denoiser.denoiser_config = config
    return denoiser


def build_denoiser(
    kind: str,
    state_shape: Sequence[int],
    *,
    schedule: str = "ve",
    sigma_min: float = 1e-3,
    sigma_max: float = 1e2,
    alpha_min: float = 1e-3,
    **net_kwargs: Any,
) -> KarrasDenoiser:
    r"""Builds a conditional EDM-preconditioned denoiser
    :math:`d_\theta(u_t, t \mid c)` (azula :class:`~azula.denoise.KarrasDenoiser`) for
    states of shape ``state_shape``, called as ``denoiser(u_t, t, cond=c)``
    (docs/method.md#diffusion-emulator).
    Arguments as in :func:`denoiser_config`; the resulting config is
    ``denoiser.denoiser_config``.  Parameters are initialised from torch's global RNG
    (:func:`~genfilter.emulators.training.train_emulator` seeds it)."""
    config = denoiser_config(
        kind,
        state_shape,
        schedule=schedule,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        alpha_min=alpha_min,
        **net_kwargs,
    )
    return build_denoiser_from_config(config)
