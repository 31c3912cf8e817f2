"""Filters: FA-APF and the baselines, behind one API (docs/method.md#fa-apf,
docs/method.md#baselines)."""

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

FILTERS = {
    "fa-apf": FAAPF,
    "bpf": BootstrapPF,
    "enkf": EnKF,
    "etkf": ETKF,
    "letkf": LETKF,
    "ensf": EnSF,
    "enff": EnFF,
    "flowdas": FlowDASEnsemble,
    "forecast": Forecast,
}
"""The filter registry: method name (configs, ``genfilter filter --method``) -> class."""

__all__ = [
    "FILTERS",
    "Ensemble",
    "Filter",
    "FilterRun",
    "StepInfo",
    "assimilate",
    "FAAPF",
    "BootstrapPF",
    "EnKF",
    "ETKF",
    "LETKF",
    "EnSF",
    "EnFF",
    "FlowDASEnsemble",
    "Forecast",
    "KalmanFilter",
]
