"""Properties of observation operators and Observation (docs/method.md#filtering-problem)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from genfilter.observations import (
    Coarsen,
    Compose,
    Identity,
    Lambda,
    Mask,
    Observation,
    Select,
    Stack,
    Subsample,
    diagonal_noise,
    full_noise,
    isotropic_noise,
    linear_matrix,
    noise_matrix,
    synthetic_observations,
)


def field(n=2, h=8, w=8):
    return torch.arange(n * h * w, dtype=torch.float64).reshape(n, h, w)


def test_operators_values_and_shapes():
    x = field()
    assert torch.equal(Identity()(x), x.flatten(1))
    assert torch.equal(Select([0, 9, 63])(x), x.flatten(1)[:, [0, 9, 63]])
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1, 2] = mask[5, 7] = True
    assert torch.equal(Mask(mask)(x), torch.stack([x[:, 1, 2], x[:, 5, 7]], -1))
    assert torch.equal(Subsample(4)(x), x[:, ::4, ::4].flatten(1))
    assert torch.equal(Subsample(3, offset=1, dims=1)(x[:, 0]), x[:, 0, 1::3])
    c = Coarsen(4)(x)
    assert c.shape == (2, 4) and torch.isclose(c[0, 0], x[0, :4, :4].mean())
    assert torch.isclose(Coarsen(2, dims=1)(x[:, 0])[0, 1], x[0, 0, 2:4].mean())
    s = Stack(Subsample(4), Coarsen(8))(x)
    assert s.shape == (2, 5)
    a = Compose(Lambda(torch.arctan), Select([1]))(x)
    assert torch.allclose(a, torch.arctan(x.flatten(1)[:, [1]]))


def test_operators_are_differentiable():
    x = field().requires_grad_()
    y = Coarsen(2)(x).sum() + Compose(Lambda(torch.sin), Subsample(2))(x).sum()
    (g,) = torch.autograd.grad(y, x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_locations_match_observed_points():
    S = (8, 8)
    grid = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij"), -1)
    x = grid[None, ..., 0] * 100 + grid[None, ..., 1]  # encodes (i, j)
    for op in (Identity(), Select([3, 17]), Subsample(4, offset=1)):
        loc = op.locations(S)
        code = op(x.double())[0]
        assert torch.allclose(loc[:, 0] * 100 + loc[:, 1], code)
    loc = Coarsen(4).locations(S)
    assert torch.allclose(
        loc, torch.tensor([[1.5, 1.5], [1.5, 5.5], [5.5, 1.5], [5.5, 5.5]], dtype=torch.float64)
    )
    assert Stack(Subsample(4), Coarsen(8)).locations(S).shape == (5, 2)
    with pytest.raises(ValueError, match="locations"):
        Lambda(torch.sin).locations(S)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
def test_log_likelihood_equals_multivariate_normal(kind):
    g = torch.Generator().manual_seed(0)
    M = 3
    C = torch.randn(M, M, generator=g, dtype=torch.float64)
    cov = {
        "isotropic": 0.3 * torch.eye(M, dtype=torch.float64),
        "diagonal": torch.diag(torch.tensor([0.2, 0.5, 1.5], dtype=torch.float64)),
        "full": C @ C.T + 0.5 * torch.eye(M, dtype=torch.float64),
    }[kind]
    noise = {
        "isotropic": isotropic_noise(math.sqrt(0.3)),
        "diagonal": diagonal_noise(torch.diagonal(cov)),
        "full": full_noise(cov),
    }[kind]
    assert torch.allclose(noise_matrix(noise, M).double(), cov)
    y = torch.randn(M, generator=g, dtype=torch.float64)
    obs = Observation(y, Select([0, 2, 3]), noise)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    for beta in (1.0, 0.3):
        ref = MultivariateNormal(x[:, [0, 2, 3]], cov / beta).log_prob(y)
        assert torch.allclose(obs.log_likelihood(x, inflation=beta), ref)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
def test_missing_values_are_dropped_consistently(kind):
    """NaN entries are removed from y, H and Σ_y: the likelihood equals that of the
    marginal Gaussian of the observed entries."""
    g = torch.Generator().manual_seed(1)
    C = torch.randn(4, 4, generator=g, dtype=torch.float64)
    cov = C @ C.T + torch.eye(4, dtype=torch.float64)
    noise = {
        "isotropic": isotropic_noise(0.8),
        "diagonal": diagonal_noise(torch.diagonal(cov)),
        "full": full_noise(cov),
    }[kind]
    y = torch.tensor([0.5, math.nan, -1.0, math.nan], dtype=torch.float64)
    obs = Observation(y, Identity(), noise)
    red = obs.observed()
    assert red.y.shape == (2,) and red.size == 2
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    full = noise_matrix(noise, 4).double()
    ref = MultivariateNormal(x[:, [0, 2]], full[[0, 2]][:, [0, 2]]).log_prob(y[[0, 2]])
    assert torch.allclose(obs.log_likelihood(x), ref)
    assert red.operator.locations((4,)).shape == (2, 1)


def test_synthetic_observations_have_the_stated_noise():
    truth = torch.zeros(4000, 3, dtype=torch.float64)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(0.5), generator=torch.Generator().manual_seed(0)
    )
    y = torch.stack([o.y for o in obs])
    assert y.shape == (4000, 2)
    assert abs(y.std().item() - 0.5) < 0.02 and y.mean().abs().item() < 0.02
    obs = synthetic_observations(
        truth[:200],
        Identity(),
        isotropic_noise(1.0),
        missing=0.3,
        generator=torch.Generator().manual_seed(0),
    )
    frac = torch.stack([o.missing for o in obs]).double().mean().item()
    assert 0.25 < frac < 0.35


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="y must be a 1D"):
        Observation(torch.zeros(2, 2), Identity(), isotropic_noise(1.0))
    with pytest.raises(ValueError, match="symmetric"):
        full_noise(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive definite"):
        full_noise(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="std"):
        isotropic_noise(-1.0)
    with pytest.raises(ValueError, match="variances"):
        diagonal_noise([1.0, -0.1])
    with pytest.raises(ValueError, match="diagonal has shape"):
        Observation(torch.zeros(3), Identity(), diagonal_noise([1.0, 1.0]))
    obs = Observation(torch.zeros(3, dtype=torch.float64), Select([0, 1]), isotropic_noise(1.0))
    with pytest.raises(ValueError, match="H\\(x\\) must be"):
        obs.log_likelihood(torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="inflation"):
        Observation(torch.zeros(2), Select([0, 1]), isotropic_noise(1.0)).log_likelihood(
            torch.zeros(1, 3), inflation=1.5
        )
    with pytest.raises(ValueError, match="divisible"):
        Coarsen(3)(field())
    with pytest.raises(ValueError, match="stride"):
        Subsample(0)


def test_linear_matrix_is_the_jacobian_of_each_linear_operator():
    """linear_matrix(H) @ vec(x) = H(x) for every linear operator, and equals the Jacobian
    of H; operators not declared linear give None (guidance then differentiates H)."""
    S = (2, 8, 8)
    x = torch.randn(3, *S, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(S, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 5, 7] = True
    ops = [
        Identity(),
        Select([0, 9, 63, 100]),
        Mask(mask),
        Subsample(4, offset=1),
        Coarsen(2),
        Stack(Subsample(4), Coarsen(8)),
        Compose(Select([1, 0]), Coarsen(4)),
        Lambda(lambda z: 2.0 * z.flatten(1)[:, :5], linear=True),
    ]
    for op in ops:
        H = linear_matrix(op, S)
        assert H is not None, op
        assert torch.allclose(x.flatten(1) @ H.T, op(x), atol=1e-12), op
        J = torch.autograd.functional.jacobian(lambda z, op=op: op(z[None])[0], x[0])
        assert torch.allclose(H, J.reshape(H.shape), atol=1e-12), op
        assert linear_matrix(op, S) is H  # formed once
    assert linear_matrix(Lambda(torch.sin), S) is None
    assert linear_matrix(Compose(Lambda(torch.arctan), Select([1])), S) is None
    assert linear_matrix(Stack(Select([0]), Lambda(torch.sin)), S) is None
    # missing values keep linearity and drop the matching rows
    y = torch.tensor([0.1, float("nan"), 0.3, 0.4])
    obs = Observation(y, Select([0, 9, 63, 100]), isotropic_noise(0.5)).observed()
    Hr = linear_matrix(obs.operator, S)
    assert torch.allclose(Hr, linear_matrix(Select([0, 63, 100]), S))
