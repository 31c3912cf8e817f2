r"""The named twin-experiment setups: system + interval + observation model + initial
ensemble, defined once (DAPPER's habit of one hidden-Markov-model definition per
experiment).

A config names one with ``setup: l63-a`` and gets its ``system``, ``system_options``,
``observations``, ``initial`` and ``dtype``; any of these given in the config replaces the
setup's (a section such as ``observations`` is replaced whole).  ``genfilter demo``, the
paper's Lorenz-63 experiments (``genfilter experiment``), the baseline tables
(``genfilter baselines``) and the shipped configs (``configs/``) all take their setups
from here.

=================== =====================================================================
``l63-a``           stochastic Lorenz-63 (ε = 0.3), x1 and x3 observed every 0.1 time
                    units, noise std 0.25, the initial ensemble N copies of the true
                    initial state (Savary, Rozet & Louppe 2026, §4.1, setup (a))
``l63-b``           the same with x1 only observed (setup (b))
``l63-c``           as ``l63-a`` with observations every 0.5 time units, where the
                    filtering distribution is far from Gaussian
``l63-d``           as ``l63-b`` every 0.5 time units
``l63-det``         deterministic Lorenz-63 (ε = 0, Euler steps of 10⁻³), x1 and x3 every
                    0.25 with noise std 1, initial ensemble truth + N(0, 2² I), float64
                    (the baseline table; comparable with DAPPER's benchmarks)
``l96``             deterministic Lorenz-96 (D = 40, F = 8), all components every 0.05
                    with noise std 1, initial ensemble truth + N(0, I), float64 (baselines)
``l96-sparse``      Lorenz-96, every second component every 0.05 with noise std 1,
                    climatological initial ensemble
``linear-gaussian`` the random stable linear-Gaussian system (D = 8), components 0, 2,
                    5, 7 observed with noise std 0.5 (exact Kalman reference)
=================== =====================================================================
"""

from __future__ import annotations

__all__ = ["Setup", "SETUPS", "get_setup"]

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Setup:
    """A named setup: the config fields it provides and a one-line description."""

    system: str
    observations: dict[str, Any]
    initial: dict[str, Any]
    description: str
    system_options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"

    def fields(self) -> dict[str, Any]:
        """The config fields this setup provides (fresh copies)."""
        return {
            "system": self.system,
            "system_options": dict(self.system_options),
            "observations": dict(self.observations),
            "initial": dict(self.initial),
            "dtype": self.dtype,
        }


_L63_INITIAL = {"recipe": "perturbed", "std": 0.0, "spinup": 10.0}

SETUPS: dict[str, Setup] = {
    "l63-a": Setup(
        "lorenz63",
        {"operator": "select", "indices": [0, 2], "noise_std": 0.25},
        _L63_INITIAL,
        "stochastic Lorenz-63 (ε = 0.3), x1 and x3 observed, noise std 0.25, every 0.1",
    ),
    "l63-b": Setup(
        "lorenz63",
        {"operator": "select", "indices": [0], "noise_std": 0.25},
        _L63_INITIAL,
        "stochastic Lorenz-63 (ε = 0.3), x1 observed, noise std 0.25, every 0.1",
    ),
    "l63-c": Setup(
        "lorenz63",
        {"operator": "select", "indices": [0, 2], "noise_std": 0.25},
        _L63_INITIAL,
        "stochastic Lorenz-63 (ε = 0.3), x1 and x3 observed, noise std 0.25, every 0.5",
        system_options={"interval": 0.5},
    ),
    "l63-d": Setup(
        "lorenz63",
        {"operator": "select", "indices": [0], "noise_std": 0.25},
        _L63_INITIAL,
        "stochastic Lorenz-63 (ε = 0.3), x1 observed, noise std 0.25, every 0.5",
        system_options={"interval": 0.5},
    ),
    "l63-det": Setup(
        "lorenz63",
        {"operator": "select", "indices": [0, 2], "noise_std": 1.0},
        {"recipe": "perturbed", "std": 2.0, "spinup": 10.0},
        "deterministic Lorenz-63 (epsilon 0, Euler dt 1e-3), x1 and x3 observed, noise "
        "std 1, every 0.25 time units",
        system_options={"epsilon": 0.0, "interval": 0.25},
        dtype="float64",
    ),
    "l96": Setup(
        "lorenz96",
        {"operator": "identity", "noise_std": 1.0},
        {"recipe": "perturbed", "std": 1.0, "spinup": 20.0},
        "deterministic Lorenz-96 (D 40, F 8, RK4 dt 0.01), all 40 observed, noise std 1, "
        "every 0.05 time units",
        system_options={"interval": 0.05},
        dtype="float64",
    ),
    "l96-sparse": Setup(
        "lorenz96",
        {"operator": "subsample", "stride": 2, "noise_std": 1.0},
        {"recipe": "climatology", "std": 0.0, "spinup": 10.0},
        "Lorenz-96 (D 40, F 8), every second component observed, noise std 1, every 0.05",
    ),
    "linear-gaussian": Setup(
        "linear-gaussian",
        {"operator": "select", "indices": [0, 2, 5, 7], "noise_std": 0.5},
        {"recipe": "perturbed", "std": 1.0, "spinup": 10.0},
        "random stable linear-Gaussian system (D 8), components 0, 2, 5, 7 observed, noise std 0.5",
        dtype="float64",
    ),
}


def get_setup(name: Any, field_name: str = "setup") -> Setup:
    """The setup called ``name``; a one-line error naming ``field_name`` otherwise."""
    if not isinstance(name, str) or name not in SETUPS:
        raise ValueError(f"{field_name} must be one of {sorted(SETUPS)}, got {name!r}")
    return SETUPS[name]
