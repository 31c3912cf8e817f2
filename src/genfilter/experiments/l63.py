r"""The Lorenz-63 emulators shipped with genfilter.

Diffusion emulators of the stochastic Lorenz-63 system (σ, ρ, β = 10, 28, 8/3,
multiplicative noise ε = 0.3), fp16 EMA weights, one per snapshot interval; their training
and validation are in docs/systems.md.  Configs select one with ``emulator: shipped``: the
file whose interval matches the config's system (:func:`shipped_checkpoint`).
"""

from __future__ import annotations

__all__ = ["SHIPPED", "shipped_checkpoint", "load_shipped_emulator"]

import math
from importlib import resources
from pathlib import Path

SHIPPED = {0.1: "lorenz63.pt", 0.5: "lorenz63-dt0.5.pt"}
"""Snapshot interval -> file under ``genfilter/checkpoints/`` (stochastic Lorenz-63,
ε = 0.3); an interval whose file is not in the installed package is not shipped."""


def _path(name: str) -> Path:
    return Path(str(resources.files("genfilter") / "checkpoints" / name))


def shipped_checkpoint(interval: float = 0.1) -> Path:
    """Path of the shipped Lorenz-63 emulator for the snapshot ``interval``.

    Raises:
        FileNotFoundError: no shipped emulator has this interval (the message lists the
            intervals that are shipped).
    """
    paths = {dt: _path(name) for dt, name in SHIPPED.items()}
    available = {dt: path for dt, path in paths.items() if path.is_file()}
    for dt, path in available.items():
        if math.isclose(float(interval), dt, rel_tol=1e-9):
            return path
    shipped = ", ".join(f"{dt:g}" for dt in sorted(available)) or "none"
    raise FileNotFoundError(
        f"no shipped Lorenz-63 emulator for the interval {float(interval):g} (shipped: "
        f"{shipped}); train one (docs/training.md) and give its checkpoint as 'emulator'"
    )


def load_shipped_emulator(interval: float = 0.1, **kwargs):
    """The shipped Lorenz-63 emulator of ``interval`` (``kwargs``: sampling options)."""
    from ..emulators.training import load_emulator

    return load_emulator(shipped_checkpoint(interval), **kwargs)
