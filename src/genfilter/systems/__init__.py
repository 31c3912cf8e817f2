"""Dynamical systems and their data (DESIGN.md)."""

from .base import StochasticSystem
from .lorenz63 import DeterministicLorenz63, StochasticLorenz63
from .lorenz96 import Lorenz96
from .navier_stokes import NavierStokes2D

__all__ = ["StochasticSystem", "StochasticLorenz63", "DeterministicLorenz63", "Lorenz96", "NavierStokes2D"]
