"""Localised FA-APF weights (genfilter.filters.local_weights; docs/method.md#localised-weights):
local systematic resampling equals the global one column by column, the vectorised per-point
inflation follows the global rule, the localised log-likelihoods reduce to the global one
without localisation, FA-APF with an infinite radius is the global FA-APF, and localisation
keeps the weights of a high-dimensional state informative."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_lg_model

from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.filters.base import assimilate
from genfilter.filters.fa_apf import FAAPF
from genfilter.filters.local_weights import (
    local_ancestors,
    local_inflation,
    local_log_likelihoods,
    localisation_weights,
)
from genfilter.filters.resampling import systematic
from genfilter.filters.tempering import find_inflation
from genfilter.observations import (
    Observation,
    Select,
    Subsample,
    diagonal_noise,
    isotropic_noise,
    synthetic_observations,
)


def test_every_column_is_the_global_systematic_resampling_with_the_same_uniform():
    g = torch.Generator().manual_seed(0)
    log_w = 3 * torch.randn(50, 7, generator=g, dtype=torch.float64)
    log_w[:, 3] = 0.0  # uniform column
    log_w[:10, 5] = -math.inf  # zero weights are allowed
    u = torch.rand(1, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    anc = local_ancestors(log_w, u)
    assert anc.shape == (50, 7) and anc.dtype == torch.int64
    for j in range(7):
        w = torch.softmax(log_w[:, j], 0)
        ref = systematic(w, generator=torch.Generator().manual_seed(4))
        assert torch.equal(anc[:, j], ref), j
    assert torch.equal(anc[:, 3], torch.arange(50))
    assert bool((anc[:, 5] >= 10).all())


def test_per_point_inflation_follows_the_global_rule():
    g = torch.Generator().manual_seed(1)
    N = 64
    ll = torch.randn(N, 6, generator=g, dtype=torch.float64) * torch.tensor(
        [0.01, 0.5, 3.0, 10.0, 40.0, 200.0], dtype=torch.float64
    )
    lo, hi = 12.0, 15.0
    beta, ess, ess1 = local_inflation(ll, lo, hi)
    for j in range(6):
        ref = find_inflation(ll[:, j], lo, hi)
        w = torch.softmax(ll[:, j], 0)
        assert ess1[j] == pytest.approx(float(1 / (w**2).sum()), rel=1e-12)
        if ref.beta == 1.0:
            assert beta[j] == 1.0
        else:  # any β with the ESS inside the interval is right; both must land there
            assert lo - 1e-9 <= ess[j] <= hi + 1e-9
            assert 0 < beta[j] < 1
    assert beta[0] == 1.0 and beta[-1] < 0.05


def test_localised_log_likelihoods_without_localisation_are_the_global_ones():
    g = torch.Generator().manual_seed(2)
    D, N = 12, 9
    obs = Observation(
        torch.randn(4, dtype=torch.float64, generator=g),
        Select([1, 4, 7, 10]),
        diagonal_noise(torch.tensor([0.5, 1.0, 2.0, 0.3], dtype=torch.float64)),
    )
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    rho = localisation_weights(obs, (D,), math.inf)
    assert torch.equal(rho, torch.ones(D, 4, dtype=torch.float64))
    L = local_log_likelihoods(x, obs, rho)
    ref = obs.log_likelihood(x)
    diff = L - ref[:, None]  # the normalising constant, the same for every particle
    assert torch.allclose(diff, diff[0:1, 0:1].expand_as(diff), atol=1e-10)
    # a finite radius on a periodic axis: point 0 sees observation 10 (distance 2), not 4
    rho = localisation_weights(obs, (D,), 2.0)
    assert rho[0, 3] > 0 and rho[0, 1] == 0 and rho[1, 0] == 1.0


def test_infinite_radius_is_the_global_fa_apf():
    """Every point then has the global weights, so the local resampling draws the global
    ancestors: the same particles at every step."""
    model = make_lg_model()
    em = LinearGaussianEmulator(model.A, model.b, model.Q, steps=8, iterations=4)
    g = torch.Generator().manual_seed(3)
    truth = torch.randn(4, model.D, generator=g, dtype=torch.float64)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(0.5), generator=torch.Generator().manual_seed(5)
    )
    x0 = 2 * torch.randn(64, model.D, generator=g, dtype=torch.float64)
    runs = [
        assimilate(
            FAAPF(em, generator=7, ess_interval=None, localization=radius), x0, obs, progress=False
        )
        for radius in (None, math.inf)
    ]
    for a, b in zip(runs[0].particles, runs[1].particles):
        assert torch.allclose(a, b, atol=1e-10)
    assert [i.log_evidence for i in runs[0].infos] == pytest.approx(
        [i.log_evidence for i in runs[1].infos], abs=1e-9
    )


def test_localisation_keeps_the_weights_of_a_large_state_informative():
    """A 64-dimensional random walk observed at every second point with small noise: the
    global weights of 32 particles collapse (tiny β), the localised ones keep most of the
    likelihood (β well above the global one at every point)."""
    D, N = 64, 32
    A = torch.eye(D, dtype=torch.float64)
    Q = 0.5 * torch.eye(D, dtype=torch.float64)
    em = LinearGaussianEmulator(A, torch.zeros(D, dtype=torch.float64), Q, steps=8, iterations=4)
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(1, D, generator=g, dtype=torch.float64)
    op = Subsample(2, dims=1)
    obs = Observation(
        (op(truth) + 0.3 * torch.randn(1, D // 2, generator=g, dtype=torch.float64))[0],
        op,
        isotropic_noise(0.3),
    )
    x0 = truth + torch.randn(N, D, generator=g, dtype=torch.float64)
    beta = {}
    for radius in (None, 3.0):
        f = FAAPF(em, generator=1, localization=radius)
        _ens, info = f.step(f.init(x0), obs)
        beta[radius] = (info.inflation, info.extra.get("inflation_min", info.inflation))
        if radius is not None:
            assert 0 < info.extra["seams"] < 1
            assert 50 / 256 * N <= info.ess <= 60 / 256 * N
    assert beta[None][0] < 0.05
    assert beta[3.0][0] > 0.3 and beta[3.0][1] > 2 * beta[None][0]


def test_bad_localisation_options_are_refused():
    model = make_lg_model()
    em = LinearGaussianEmulator(model.A, model.b, model.Q, steps=4, iterations=4)
    with pytest.raises(ValueError, match="radius must be > 0"):
        FAAPF(em, localization=0.0)
    with pytest.raises(ValueError, match="weights='dirac'"):
        FAAPF(em, localization=2.0, weights="gaussian")
    with pytest.raises(ValueError, match="resampling must be 'systematic'"):
        FAAPF(em, localization=2.0, resampling="multinomial")
    with pytest.raises(TypeError, match="periodic"):
        FAAPF(em, localization=2.0, periodic="yes")
    assert FAAPF(em).shardable and not FAAPF(em, localization=2.0).shardable
