"""Dynamical systems and their data (docs/systems.md; docs/method.md#test-systems)."""

from .base import StochasticSystem
from .linear_gaussian import LinearGaussian
from .lorenz63 import DeterministicLorenz63, StochasticLorenz63
from .lorenz96 import Lorenz96
from .navier_stokes import NavierStokes2D

__all__ = [
    "StochasticSystem",
    "StochasticLorenz63",
    "DeterministicLorenz63",
    "Lorenz96",
    "NavierStokes2D",
    "LinearGaussian",
]
