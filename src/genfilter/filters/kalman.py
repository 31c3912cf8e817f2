r"""Exact Kalman filter for linear-Gaussian models (the reference every filter is checked
against in the linear-Gaussian limit, e.g. FA-APF with "gaussian" weights;
docs/method.md#linear-gaussian-reference).

Model: :math:`x^{k+1} = A x^k + b + w`, :math:`w \sim \mathcal{N}(0, Q)`;
:math:`y^k = H x^k + \varepsilon`, :math:`\varepsilon \sim \mathcal{N}(0, R)`.
States are flat vectors ``(D,)``.

References:
    | A New Approach to Linear Filtering and Prediction Problems (Kalman, 1960)
    | Journal of Basic Engineering 82, 35-45
"""

from __future__ import annotations

__all__ = ["KalmanFilter", "KalmanResult"]

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..observations import Observation, noise_matrix


@dataclass
class KalmanResult:
    """Filtering means ``(K, D)``, covariances ``(K, D, D)`` and the log-likelihood
    increments ``(K,)`` :math:`\\log p(y^k \\mid y^{1:k-1})`."""

    means: Tensor
    covs: Tensor
    log_likelihoods: Tensor

    @property
    def log_likelihood(self) -> float:
        return float(self.log_likelihoods.sum())


def _linear_matrix(operator, D: int, dtype) -> Tensor:
    """The matrix of a linear operator on flat states of size D (by probing)."""
    eye = torch.eye(D, dtype=dtype)
    return operator(eye).T  # (M, D): column j is H e_j


class KalmanFilter:
    r"""Kalman filter (predict, then update) in float64.

    Arguments:
        A, b, Q: The transition :math:`x^{k+1} = A x^k + b + w`, :math:`w \sim N(0, Q)`.
    """

    def __init__(self, A: Tensor, b: Tensor, Q: Tensor) -> None:
        self.A = torch.as_tensor(A, dtype=torch.float64)
        self.b = torch.as_tensor(b, dtype=torch.float64)
        self.Q = torch.as_tensor(Q, dtype=torch.float64)

    def predict(self, m: Tensor, P: Tensor) -> tuple[Tensor, Tensor]:
        return self.A @ m + self.b, self.A @ P @ self.A.T + self.Q

    def update(self, m: Tensor, P: Tensor, obs: Observation) -> tuple[Tensor, Tensor, float]:
        """Conditions ``N(m, P)`` on a linear observation; returns mean, cov and
        :math:`\\log N(y; H m, H P H^T + R)`."""
        obs = obs.observed()
        D = m.shape[0]
        M = obs.y.shape[0]
        if M == 0:
            return m, P, 0.0
        H = _linear_matrix(obs.operator, D, torch.float64)
        R = noise_matrix(obs.noise, M).double()
        S = H @ P @ H.T + R
        r = obs.y.double() - H @ m
        L = torch.linalg.cholesky(S)
        alpha = torch.cholesky_solve(r[:, None], L)[:, 0]
        K = torch.cholesky_solve(H @ P, L).T  # P H^T S^-1
        m_new = m + P @ H.T @ alpha
        P_new = P - K @ H @ P
        P_new = (P_new + P_new.T) / 2
        logdet = 2 * torch.log(torch.diagonal(L)).sum()
        ll = -0.5 * (float(r @ alpha) + float(logdet) + M * math.log(2 * math.pi))
        return m_new, P_new, ll

    def filter(
        self, m0: Tensor, P0: Tensor, observations: Sequence[Observation | None]
    ) -> KalmanResult:
        r"""Runs predict+update for every observation from the prior :math:`N(m_0, P_0)` on
        :math:`x^0`; the k-th result is the filtering distribution of :math:`x^{k+1}`."""
        m = torch.as_tensor(m0, dtype=torch.float64)
        P = torch.as_tensor(P0, dtype=torch.float64)
        means, covs, lls = [], [], []
        for obs in observations:
            m, P = self.predict(m, P)
            ll = 0.0
            if obs is not None:
                m, P, ll = self.update(m, P, obs)
            means.append(m)
            covs.append(P)
            lls.append(ll)
        return KalmanResult(torch.stack(means), torch.stack(covs), torch.tensor(lls))
