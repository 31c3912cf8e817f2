"""Emulators of the transition p(x^{k+1} | x^k) (docs/method.md#diffusion-emulator)."""

from .base import Emulator
from .diffusion import SAMPLERS, DiffusionEmulator
from .guidance import GuidanceWindow, ProjectedMMPSDenoiser
from .interpolant import Interpolant, StochasticInterpolantEmulator
from .jittered import Jittered
from .linear_gaussian import ConditionalGaussianDenoiser, LinearGaussianEmulator
from .simulator import SimulatorEmulator

__all__ = [
    "Emulator",
    "DiffusionEmulator",
    "GuidanceWindow",
    "ProjectedMMPSDenoiser",
    "SAMPLERS",
    "StochasticInterpolantEmulator",
    "Interpolant",
    "LinearGaussianEmulator",
    "ConditionalGaussianDenoiser",
    "SimulatorEmulator",
    "Jittered",
]
