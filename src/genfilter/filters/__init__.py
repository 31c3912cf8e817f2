"""Filters: FA-APF and the baselines, behind one API (DESIGN.md)."""

from .base import Ensemble, Filter, FilterRun, StepInfo, assimilate
from .bpf import BootstrapPF
from .enff import EnFF
from .enkf import EnKF
from .ensf import EnSF
from .fa_apf import FAAPF
from .flowdas import FlowDASEnsemble
from .forecast import Forecast
from .kalman import KalmanFilter
from .letkf import ETKF, LETKF

__all__ = [
    "Ensemble", "Filter", "FilterRun", "StepInfo", "assimilate",
    "FAAPF", "BootstrapPF", "EnKF", "ETKF", "LETKF", "EnSF", "EnFF", "FlowDASEnsemble",
    "Forecast", "KalmanFilter",
]
