"""Dynamical systems and their data (DESIGN.md)."""

from .lorenz63 import StochasticLorenz63
from .lorenz96 import Lorenz96
from .navier_stokes import NavierStokes2D

__all__ = ["StochasticLorenz63", "Lorenz96", "NavierStokes2D"]
