r"""The Lorenz-63 emulators shipped with genfilter.

Diffusion emulators of the stochastic Lorenz-63 system (σ, ρ, β = 10, 28, 8/3,
multiplicative noise ε = 0.3), fp16 EMA weights, one per snapshot interval; their training
and validation are in docs/systems.md.  Configs select one with ``emulator: shipped``: the
file whose interval matches the config's system (:func:`shipped_checkpoint`).
"""

from __future__ import annotations

__all__ = ["SHIPPED", "SHIPPED_INTERPOLANT", "shipped_checkpoint", "load_shipped_emulator"]

import math
from importlib import resources
from pathlib import Path

SHIPPED = {0.1: "lorenz63.pt", 0.5: "lorenz63-dt0.5.pt"}
"""Snapshot interval -> file under ``genfilter/checkpoints/`` (stochastic Lorenz-63,
ε = 0.3); an interval whose file is not in the installed package is not shipped."""

SHIPPED_INTERPOLANT = {0.5: "lorenz63-dt0.5-interpolant.pt"}
"""The same for the stochastic-interpolant family (``emulator: shipped-interpolant``;
docs/systems.md): a velocity network of the same size, sampled with
:data:`INTERPOLANT_STEPS` SDE steps unless told otherwise."""

INTERPOLANT_STEPS = 200
"""Default SDE steps of the shipped interpolant: its one-step energy distance to the true
model is 0.035 with 64 steps and 0.008 with 200 (docs/systems.md)."""

FAMILIES = {"diffusion": SHIPPED, "interpolant": SHIPPED_INTERPOLANT}


def _path(name: str) -> Path:
    return Path(str(resources.files("genfilter") / "checkpoints" / name))


def shipped_checkpoint(interval: float = 0.1, family: str = "diffusion") -> Path:
    """Path of the shipped Lorenz-63 emulator of ``family`` (``"diffusion"`` or
    ``"interpolant"``) for the snapshot ``interval``.

    Raises:
        FileNotFoundError: no shipped emulator of the family has this interval (the message
            lists the intervals that are shipped).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    paths = {dt: _path(name) for dt, name in FAMILIES[family].items()}
    available = {dt: path for dt, path in paths.items() if path.is_file()}
    for dt, path in available.items():
        if math.isclose(float(interval), dt, rel_tol=1e-9):
            return path
    shipped = ", ".join(f"{dt:g}" for dt in sorted(available)) or "none"
    kind = "" if family == "diffusion" else f"{family} "
    raise FileNotFoundError(
        f"no shipped Lorenz-63 {kind}emulator for the interval {float(interval):g} (shipped: "
        f"{shipped}); train one (docs/training.md) and give its checkpoint as 'emulator'"
    )


def load_shipped_emulator(interval: float = 0.1, family: str = "diffusion", **kwargs):
    """The shipped Lorenz-63 emulator of ``family`` and ``interval`` (``kwargs``: sampling
    options; the interpolant samples with :data:`INTERPOLANT_STEPS` steps by default)."""
    from ..emulators.training import load_emulator

    if family == "interpolant":
        kwargs.setdefault("steps", INTERPOLANT_STEPS)
    return load_emulator(shipped_checkpoint(interval, family), **kwargs)
