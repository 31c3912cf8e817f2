r"""The emulators shipped with genfilter.

Diffusion emulators of the stochastic Lorenz-63 system (σ, ρ, β = 10, 28, 8/3,
multiplicative noise ε = 0.3), fp16 EMA weights, one per snapshot interval (0.1 and 0.5),
stochastic-interpolant emulators of the same system for the same intervals, and a diffusion
emulator of the deterministic Lorenz-96 system (D = 40, F = 8, interval 0.05); their
training and validation are in docs/systems.md.  Configs select one with
``emulator: shipped`` (or ``shipped-interpolant``): the file of the config's system whose
interval matches (:func:`shipped_checkpoint`).
"""

from __future__ import annotations

__all__ = [
    "SHIPPED",
    "SHIPPED_INTERPOLANT",
    "SHIPPED_LORENZ96",
    "SHIPPED_NS2D",
    "shipped_checkpoint",
    "load_shipped_emulator",
    "has_shipped",
    "shipped_systems",
    "SHIPPED_FAMILIES",
]

import math
from importlib import resources
from pathlib import Path

SHIPPED = {0.1: "lorenz63.pt", 0.5: "lorenz63-dt0.5.pt"}
"""Snapshot interval -> file under ``genfilter/checkpoints/`` (stochastic Lorenz-63,
ε = 0.3); an interval whose file is not in the installed package is not shipped."""

SHIPPED_INTERPOLANT = {0.1: "lorenz63-interpolant.pt", 0.5: "lorenz63-dt0.5-interpolant.pt"}
"""The same for the stochastic-interpolant family (``emulator: shipped-interpolant``;
docs/systems.md): a velocity network of the same size, sampled with
:data:`INTERPOLANT_STEPS` SDE steps unless told otherwise."""

SHIPPED_LORENZ96 = {0.05: "lorenz96.pt"}
"""The same for Lorenz-96 (D = 40, F = 8, deterministic; diffusion family)."""

SHIPPED_NS2D = {0.5: "ns2d-32.pt"}
"""The same for 2D Navier–Stokes on the 32² grid (the constants of docs/systems.md; diffusion
family, a four-depth U-Net trained on one CPU core: docs/results/ns.md, "A deeper U-Net")."""

INTERPOLANT_STEPS = 200
"""Default SDE steps of the shipped interpolants: the one-step energy distance to the true
model of the interval-0.5 one is 0.035 with 64 steps and 0.008 with 200 (docs/systems.md)."""

FAMILIES = {"diffusion": SHIPPED, "interpolant": SHIPPED_INTERPOLANT}
"""The Lorenz-63 files of each family."""

REGISTRY = {
    ("lorenz63", "diffusion"): SHIPPED,
    ("lorenz63", "interpolant"): SHIPPED_INTERPOLANT,
    ("lorenz96", "diffusion"): SHIPPED_LORENZ96,
    ("ns2d", "diffusion"): SHIPPED_NS2D,
}
"""(system, family) -> {interval: file}."""

SHIPPED_FAMILIES = {"shipped": "diffusion", "shipped-interpolant": "interpolant"}
"""The config's ``emulator`` value that selects a shipped file -> its family."""

_NAMES = {"lorenz63": "Lorenz-63", "lorenz96": "Lorenz-96", "ns2d": "Navier–Stokes"}


def has_shipped(system: str, family: str = "diffusion") -> bool:
    """Whether genfilter ships an emulator of ``family`` for the registered ``system``."""
    return (system, family) in REGISTRY


def shipped_systems(family: str = "diffusion") -> list[str]:
    """The systems with a shipped emulator of ``family``, sorted."""
    return sorted({s for s, f in REGISTRY if f == family})


def _path(name: str) -> Path:
    return Path(str(resources.files("genfilter") / "checkpoints" / name))


def shipped_checkpoint(
    interval: float = 0.1, family: str = "diffusion", system: str = "lorenz63"
) -> Path:
    """Path of the shipped emulator of ``system`` and ``family`` (``"diffusion"`` or
    ``"interpolant"``) for the snapshot ``interval``.

    Raises:
        ValueError: no shipped emulator of this family for this system.
        FileNotFoundError: none of the family has this interval (the message lists the
            intervals that are shipped).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    if not has_shipped(system, family):
        raise ValueError(
            f"no shipped {family} emulator for the system {system!r} (shipped for: "
            f"{', '.join(shipped_systems(family))}); train one (docs/training.md)"
        )
    paths = {dt: _path(name) for dt, name in REGISTRY[system, family].items()}
    available = {dt: path for dt, path in paths.items() if path.is_file()}
    for dt, path in available.items():
        if math.isclose(float(interval), dt, rel_tol=1e-9):
            return path
    shipped = ", ".join(f"{dt:g}" for dt in sorted(available)) or "none"
    kind = "" if family == "diffusion" else f"{family} "
    raise FileNotFoundError(
        f"no shipped {_NAMES.get(system, system)} {kind}emulator for the interval "
        f"{float(interval):g} (shipped: {shipped}); train one (docs/training.md) and give "
        "its checkpoint as 'emulator'"
    )


def load_shipped_emulator(
    interval: float = 0.1, family: str = "diffusion", system: str = "lorenz63", **kwargs
):
    """The shipped emulator of ``system``, ``family`` and ``interval`` (``kwargs``: sampling
    options; the interpolant samples with :data:`INTERPOLANT_STEPS` steps by default)."""
    from ..emulators.training import load_emulator

    if family == "interpolant":
        kwargs.setdefault("steps", INTERPOLANT_STEPS)
    return load_emulator(shipped_checkpoint(interval, family, system), **kwargs)
