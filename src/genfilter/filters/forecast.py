r"""Free forecast ensemble (docs/method.md#free-forecast): every member propagated with the
emulator's ``sample``, observations ignored — the "ensemble of forecasts" of Savary, Rozet &
Louppe (2026), §4.3, Fig. 4."""

from __future__ import annotations

__all__ = ["Forecast"]

import time

import torch

from .._utils import make_generator
from ..emulators.base import Emulator
from ..observations import Observation
from .base import (
    Ensemble,
    EnsembleFilter,
    StepInfo,
)


class Forecast(EnsembleFilter):
    """Free-running ensemble (no assimilation).

    Arguments:
        emulator: Anything with ``sample(x, generator=)``.
        generator: ``torch.Generator``, int seed or ``None``.
    """

    def __init__(self, emulator: Emulator, *, generator: torch.Generator | int | None = None):
        if not callable(getattr(emulator, "sample", None)):
            raise TypeError("emulator must implement sample()")
        self.emulator = emulator
        self.generator = make_generator(generator)

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        t0 = time.perf_counter()
        x = self.emulator.sample(ensemble.particles, generator=self.generator)
        return Ensemble(x, ensemble.log_weights.clone()), StepInfo(
            ess=ensemble.ess, seconds=time.perf_counter() - t0
        )
