r"""The Lorenz-63 emulator shipped with genfilter.

``checkpoints/lorenz63.pt``: a diffusion emulator of the stochastic Lorenz-63 system
(σ, ρ, β = 10, 28, 8/3, multiplicative noise ε = 0.3, snapshots every 0.1 time units),
fp16 EMA weights; its training and validation are in docs/systems.md.  Configs select it
with ``emulator: shipped``.
"""

from __future__ import annotations

__all__ = ["shipped_checkpoint", "load_shipped_emulator"]

from importlib import resources
from pathlib import Path


def shipped_checkpoint() -> Path:
    """Path of the Lorenz-63 emulator shipped with the package."""
    path = Path(str(resources.files("genfilter") / "checkpoints" / "lorenz63.pt"))
    if not path.is_file():
        raise FileNotFoundError(f"the shipped Lorenz-63 checkpoint is missing at {path}")
    return path


def load_shipped_emulator(**kwargs):
    """The shipped Lorenz-63 emulator (``kwargs``: sampling options)."""
    from ..emulators.training import load_emulator

    return load_emulator(shipped_checkpoint(), **kwargs)
