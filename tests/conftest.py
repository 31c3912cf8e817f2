"""Shared fixtures: a random stable linear-Gaussian model in D = 4 with M = 2 observed
components, the reference case where the exact Kalman filter gives the posterior the
filters must reproduce (docs/method.md#linear-gaussian-reference)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

torch.set_num_threads(int(os.environ.get("GENFILTER_TEST_THREADS", "1")))


@dataclass
class LGModel:
    A: torch.Tensor
    b: torch.Tensor
    Q: torch.Tensor
    D: int = 4


def make_lg_model(seed: int = 0, D: int = 4) -> LGModel:
    g = torch.Generator().manual_seed(seed)
    # stable: spectral radius 0.9 (scaled orthogonal matrix)
    A = 0.9 * torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0]
    b = 0.1 * torch.randn(D, generator=g, dtype=torch.float64)
    L = 0.5 * torch.randn(D, D, generator=g, dtype=torch.float64)
    Q = L @ L.T + 0.2 * torch.eye(D, dtype=torch.float64)
    return LGModel(A, b, Q, D)


def simulate_lg(model: LGModel, K: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(model.Q)
    x = torch.zeros(model.D, dtype=torch.float64)
    out = []
    for _ in range(K):
        x = model.A @ x + model.b + chol @ torch.randn(model.D, generator=g, dtype=torch.float64)
        out.append(x)
    return torch.stack(out)


@pytest.fixture
def lg_model() -> LGModel:
    return make_lg_model()
