r"""Linear-Gaussian twin experiment: every filter against the exact Kalman filter.

The model is :math:`x^{k+1} = A x^k + b + w` with a random stable ``A`` and the emulator is
the exact :class:`~genfilter.emulators.linear_gaussian.LinearGaussianEmulator`, so the
Kalman filter is the Bayes-optimal answer and every number in the table can be judged
against it.  Used by ``genfilter demo --system linear-gaussian`` and the tests.
"""

from __future__ import annotations

__all__ = ["LinearGaussianTwin", "make_twin", "run_filters", "format_table"]

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..emulators.linear_gaussian import LinearGaussianEmulator
from ..filters.base import FilterRun, assimilate
from ..filters.bpf import BootstrapPF
from ..filters.enkf import EnKF
from ..filters.fa_apf import FAAPF
from ..filters.kalman import KalmanFilter, KalmanResult
from ..observations import Observation, Select, isotropic_noise, synthetic_observations
from .report import markdown_table, plot_trajectories


@dataclass
class LinearGaussianTwin:
    A: Tensor
    b: Tensor
    Q: Tensor
    truth: Tensor  # (K, D)
    observations: list[Observation]
    m0: Tensor
    P0: Tensor


def make_twin(D: int = 8, observed: int = 4, steps: int = 30, noise_std: float = 0.5,
              seed: int = 0) -> LinearGaussianTwin:
    """A random stable model (spectral radius 0.95) observing every other component."""
    if D < 2 or not 1 <= observed <= D:
        raise ValueError(f"need D >= 2 and 1 <= observed <= D, got D={D}, observed={observed}")
    g = torch.Generator().manual_seed(seed)
    A = 0.95 * torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0]
    b = 0.1 * torch.randn(D, generator=g, dtype=torch.float64)
    L = 0.4 * torch.randn(D, D, generator=g, dtype=torch.float64)
    Q = L @ L.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    m0, P0 = torch.zeros(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64)
    x = m0 + torch.randn(D, generator=g, dtype=torch.float64)
    chol = torch.linalg.cholesky(Q)
    truth = []
    for _ in range(steps):
        x = A @ x + b + chol @ torch.randn(D, generator=g, dtype=torch.float64)
        truth.append(x)
    truth = torch.stack(truth)
    idx = torch.linspace(0, D - 1, observed).round().long().unique()
    obs = synthetic_observations(truth, Select(idx), isotropic_noise(noise_std), generator=g)
    return LinearGaussianTwin(A, b, Q, truth, obs, m0, P0)


def _kalman_rows(twin: LinearGaussianTwin, kf: KalmanResult, burn_in: int) -> dict[str, float]:
    """Expected skill/spread/CRPS of the exact posterior (Gaussian closed forms)."""
    sd = torch.sqrt(torch.diagonal(kf.covs, dim1=1, dim2=2))[burn_in:]
    err = (kf.means - twin.truth)[burn_in:]
    z = err / sd
    # CRPS of N(m, s²) at y: s [z(2Φ(z) − 1) + 2φ(z) − 1/√π]
    phi = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    crps_g = sd * (z * (2 * Phi - 1) + 2 * phi - 1 / math.sqrt(math.pi))
    sk = err.pow(2).mean(-1).sqrt()
    sp = sd.pow(2).mean(-1).sqrt()
    return {
        "skill": float(sk.mean()),
        "spread": float(sp.mean()),
        "ssr": float((sp / sk).mean()),
        "crps": float(crps_g.mean()),
        "log_evidence": kf.log_likelihood,
    }


def run_filters(
    twin: LinearGaussianTwin,
    particles: int = 256,
    seed: int = 0,
    burn_in: int = 5,
    progress: bool = True,
    steps: int = 32,
) -> tuple[dict[str, dict[str, float]], dict[str, FilterRun]]:
    """Runs Kalman, FA-APF (gaussian and dirac weights), BPF and EnKF; returns a table
    ``{filter: {metric: value}}`` (averages over steps after ``burn_in``) and the runs."""
    D = twin.A.shape[0]
    g = torch.Generator().manual_seed(seed)
    x0 = twin.m0 + torch.randn(particles, D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(twin.P0).T
    em = LinearGaussianEmulator(twin.A, twin.b, twin.Q, steps=steps, iterations=4)
    kf = KalmanFilter(twin.A, twin.b, twin.Q).filter(twin.m0, twin.P0, twin.observations)
    table = {"Kalman (exact)": _kalman_rows(twin, kf, burn_in)}
    table["Kalman (exact)"]["seconds"] = 0.0
    filters = {
        "FA-APF (gaussian weights)": FAAPF(em, weights="gaussian", generator=seed + 1),
        "FA-APF (dirac weights)": FAAPF(em, weights="dirac", generator=seed + 1),
        "BPF": BootstrapPF(em, generator=seed + 2),
        "EnKF": EnKF(em, generator=seed + 3),
    }
    runs = {}
    for name, f in filters.items():
        t0 = time.perf_counter()
        run = assimilate(f, x0, twin.observations, truth=twin.truth, progress=progress, desc=name)
        row = run.summary(burn_in=burn_in)
        table[name] = {
            "skill": row["skill"], "spread": row["spread"], "ssr": row["ssr"], "crps": row["crps"],
            "log_evidence": run.log_evidence, "seconds": time.perf_counter() - t0,
        }
        runs[name] = run
    return table, runs


def format_table(table: dict[str, dict[str, float]]) -> str:
    """Markdown table of :func:`run_filters` results."""
    return markdown_table(table, ["skill", "spread", "ssr", "crps", "log_evidence", "seconds"])


def plot_runs(twin: LinearGaussianTwin, runs: dict[str, FilterRun], path: Path,
              components: int = 2) -> Path:
    """Truth, observations and ensemble mean ± spread of the first components."""
    K = twin.truth.shape[0]
    return plot_trajectories(twin.truth, twin.observations, runs, torch.arange(1, K + 1).numpy(),
                             path, components=components, xlabel="assimilation step k",
                             title="Linear-Gaussian twin: ensemble mean ± spread vs truth")
