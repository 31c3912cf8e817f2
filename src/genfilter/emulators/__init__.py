"""Emulators of the transition p(x^{k+1} | x^k) (docs/method.md#diffusion-emulator)."""

from .base import Emulator
from .counting import PassCountingDenoiser
from .diffusion import SAMPLERS, DiffusionEmulator
from .guidance import DPSDenoiser, GuidanceWindow, KrylovMMPSDenoiser, ProjectedMMPSDenoiser
from .interpolant import Interpolant, StochasticInterpolantEmulator
from .jittered import Jittered
from .linear_gaussian import ConditionalGaussianDenoiser, LinearGaussianEmulator
from .simulator import SimulatorEmulator

__all__ = [
    "Emulator",
    "DiffusionEmulator",
    "GuidanceWindow",
    "ProjectedMMPSDenoiser",
    "KrylovMMPSDenoiser",
    "DPSDenoiser",
    "SAMPLERS",
    "StochasticInterpolantEmulator",
    "Interpolant",
    "LinearGaussianEmulator",
    "ConditionalGaussianDenoiser",
    "SimulatorEmulator",
    "Jittered",
    "PassCountingDenoiser",
]
