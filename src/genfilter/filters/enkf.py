r"""Stochastic ensemble Kalman filter with perturbed observations (Burgers, van Leeuwen &
Evensen 1998; Evensen 2009; Savary, Rozet & Louppe 2026, App. B.2; docs/method.md#enkf).

Ensemble-space analysis (never a D×D or D×M matrix): with anomalies
:math:`A = [x_i^f - \bar x] / \sqrt{N-1}` (D×N), :math:`\tilde Y = [H(x_i^f) - \bar y] /
\sqrt{N-1}` (M×N) and :math:`G = I_N + \tilde Y^\top \Sigma_y^{-1} \tilde Y`,

.. math:: x_i^a = x_i^f + A\, G^{-1} \tilde Y^\top \Sigma_y^{-1} (y + \varepsilon_i - H(x_i^f)),

which equals :math:`x_i^f + K d_i` with :math:`K = A \tilde Y^\top (\tilde Y \tilde Y^\top +
\Sigma_y)^{-1}` by the Woodbury identity.  The perturbations :math:`\varepsilon_i \sim
\mathcal{N}(0, \Sigma_y)` are re-centred to zero ensemble mean.  Multiplicative (posterior)
inflation :math:`x_i \leftarrow \bar x + \lambda (x_i - \bar x)`.

References:
    | Sequential Data Assimilation with a Nonlinear Quasi-Geostrophic Model Using Monte Carlo
    | Methods to Forecast Error Statistics (Evensen, 1994)
    | Journal of Geophysical Research 99(C5), 10143-10162

    | Analysis Scheme in the Ensemble Kalman Filter (Burgers, van Leeuwen & Evensen, 1998)
    | Monthly Weather Review 126, 1719-1724

    | Data Assimilation: The Ensemble Kalman Filter, 2nd ed. (Evensen, 2009)
    | Springer
"""

from __future__ import annotations

__all__ = ["EnKF", "ensemble_kalman_update"]


import torch
from torch import Tensor

from .._utils import make_generator
from ..emulators.base import Emulator
from ..observations import Observation, noise_matrix
from .base import (
    Ensemble,
    EnsembleFilter,
    StepInfo,
    check_inflation,
    inflate,
    uniform_log_weights,
)


def ensemble_kalman_update(
    forecast: Tensor, obs: Observation, generator: torch.Generator | None = None
) -> Tensor:
    r"""Perturbed-observation EnKF analysis (module docstring; docs/method.md#enkf).

    Arguments:
        forecast: ``(N, *S)``; obs: an observation without missing values.

    Returns:
        The analysis ensemble ``(N, *S)``.
    """
    N = forecast.shape[0]
    X = forecast.flatten(1).double()
    A = (X - X.mean(0)) / (N - 1) ** 0.5  # (N, D): rows are anomalies
    Y = obs.predict(forecast).double()
    Yt = (Y - Y.mean(0)) / (N - 1) ** 0.5  # (N, M)
    noise = obs.noise.to(dtype=torch.float64, device=Y.device)
    eps = obs.sample_noise((N,), generator=generator, dtype=torch.float64).to(Y.device)
    eps = eps - eps.mean(0)
    d = obs.y.to(Y)[None] + eps - Y  # (N, M): innovations
    M = Y.shape[1]
    if M <= N:
        # observation space (M×M): Ỹᵀ (Ỹ Ỹᵀ + Σ_y)⁻¹ d — cheaper when M ≤ N (Woodbury)
        S = Yt.T @ Yt + noise_matrix(obs.noise, M).to(Yt)
        L = torch.linalg.cholesky(S)
        # (N, M) @ (M, D): never the N×N matrix, O(N M D)
        return (
            (X + torch.cholesky_solve(d.T, L).T @ (Yt.T @ A))
            .to(forecast.dtype)
            .reshape(forecast.shape)
        )
    else:
        # ensemble space (N×N): G⁻¹ Ỹᵀ Σ⁻¹ d with G = I + Ỹᵀ Σ⁻¹ Ỹ
        Si_Yt = noise.inv(Yt)  # rows: (Σ⁻¹ Ỹ_j)ᵀ
        G = torch.eye(N, dtype=torch.float64, device=Yt.device) + Yt @ Si_Yt.T
        C = Yt @ noise.inv(d).T  # Ỹᵀ Σ⁻¹ d_i
        W = torch.linalg.solve(G, C)  # (N_ens, N_members)
    Xa = X + W.T @ A
    return Xa.to(forecast.dtype).reshape(forecast.shape)


class EnKF(EnsembleFilter):
    r"""Stochastic EnKF with perturbed observations (docs/method.md#enkf).

    Arguments:
        emulator: Anything with ``sample(x, generator=)`` (the forecast).
        inflation: Multiplicative posterior inflation λ ≥ 1 (default 1: none, as in DAPPER).
        generator: ``torch.Generator``, int seed or ``None``.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        inflation: float = 1.0,
        generator: torch.Generator | int | None = None,
    ) -> None:
        if not callable(getattr(emulator, "sample", None)):
            raise TypeError("emulator must implement sample()")
        self.emulator = emulator
        self.inflation = check_inflation(inflation)
        self.generator = make_generator(generator)

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        def analysis(xf, reduced):
            return inflate(ensemble_kalman_update(xf, reduced, self.generator), self.inflation), {}

        _, xa, info = self._forecast_analysis_step(ensemble, obs, analysis)
        return Ensemble(xa, uniform_log_weights(ensemble.size)), info
