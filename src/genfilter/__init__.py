"""genfilter: Bayesian filtering with generative emulators (FA-APF and baselines).

The public API re-exports the pieces a user combines: an emulator, an observation and a
filter, run by :func:`assimilate` and scored by :mod:`genfilter.metrics`.
"""

from . import io, metrics
from ._version import __version__ as __version__
from .emulators import (
    DiffusionEmulator,
    Emulator,
    LinearGaussianEmulator,
    SimulatorEmulator,
    StochasticInterpolantEmulator,
)
from .filters import (
    ETKF,
    FAAPF,
    LETKF,
    BootstrapPF,
    EnFF,
    EnKF,
    Ensemble,
    EnSF,
    Filter,
    FilterRun,
    FlowDASEnsemble,
    Forecast,
    KalmanFilter,
    StepInfo,
    assimilate,
)
from .observations import (
    Coarsen,
    Compose,
    Identity,
    Lambda,
    Mask,
    Observation,
    ObservationOperator,
    Select,
    Stack,
    Subsample,
    diagonal_noise,
    full_noise,
    isotropic_noise,
    synthetic_observations,
)

__all__ = [
    "io",
    "metrics",
    "Emulator",
    "DiffusionEmulator",
    "LinearGaussianEmulator",
    "SimulatorEmulator",
    "StochasticInterpolantEmulator",
    "Ensemble",
    "StepInfo",
    "Filter",
    "FilterRun",
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
    "Observation",
    "ObservationOperator",
    "Identity",
    "Select",
    "Mask",
    "Subsample",
    "Coarsen",
    "Stack",
    "Compose",
    "Lambda",
    "isotropic_noise",
    "diagonal_noise",
    "full_noise",
    "synthetic_observations",
]
