"""Emulators of the transition p(x^{k+1} | x^k) (DESIGN.md)."""

from .base import Emulator
from .diffusion import SAMPLERS, DiffusionEmulator, GuidanceWindow
from .linear_gaussian import ConditionalGaussianDenoiser, LinearGaussianEmulator
from .simulator import SimulatorEmulator

__all__ = [
    "Emulator",
    "DiffusionEmulator",
    "GuidanceWindow",
    "SAMPLERS",
    "LinearGaussianEmulator",
    "ConditionalGaussianDenoiser",
    "SimulatorEmulator",
]
