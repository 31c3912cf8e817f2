"""Properties of genfilter.filters.tempering (docs/method.md#inflation)."""

import math

import pytest
import torch

from genfilter.filters.tempering import InflationResult, ess, find_inflation


def _ess_direct(log_w: torch.Tensor) -> float:
    w = torch.softmax(log_w.double(), 0)
    return float(1.0 / (w**2).sum())


def _log_likelihoods(seed: int, n: int, scale: float) -> torch.Tensor:
    """Gaussian-style log-likelihoods -m_i / 2, m_i a scaled chi-square
    (docs/method.md#fa-apf-weights)."""
    g = torch.Generator().manual_seed(seed)
    return -0.5 * scale * (torch.randn(n, 3, generator=g, dtype=torch.float64) ** 2).sum(1)


# ---- ess ---------------------------------------------------------------------------------


def test_ess_of_uniform_degenerate_and_shifted_weights():
    assert ess(torch.zeros(17)) == pytest.approx(17)
    lw = torch.full((17,), -math.inf)
    lw[3] = 5.0
    assert ess(lw) == pytest.approx(1.0)
    lw = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert ess(lw) == pytest.approx(_ess_direct(lw), rel=1e-12)
    assert ess(lw + 1e5) == pytest.approx(ess(lw), rel=1e-9)  # no overflow, shift-invariant
    assert ess(lw * 1e4) >= 1.0  # never exponentiates unshifted values
    assert 1.0 <= ess(lw) <= 50


def test_ess_rejects_invalid_log_weights():
    for bad, match in [
        (torch.tensor([0.0, math.nan]), "log_weights.*NaN"),
        (torch.tensor([0.0, math.inf]), r"log_weights.*\+inf"),
        (torch.full((3,), -math.inf), "log_weights.*all -inf"),
    ]:
        with pytest.raises(ValueError, match=match):
            ess(bad)


# ---- find_inflation: the target ------------------------------------------------------------


def test_no_inflation_when_ess_is_inside_or_above_the_interval():
    N = 256
    # above: tiny log-likelihoods, ESS(1) close to N > n_max
    res = find_inflation(_log_likelihoods(0, N, 1e-4), 50, 60)
    assert res.beta == 1.0 and res.iterations == 0 and res.converged
    assert res.ess > 60 and res.ess == res.ess_untempered
    # inside: 55 particles of equal likelihood, the rest incompatible -> ESS(1) = 55
    ll = torch.full((N,), -math.inf, dtype=torch.float64)
    ll[torch.randperm(N, generator=torch.Generator().manual_seed(1))[:55]] = -2.0
    res = find_inflation(ll, 50, 60)
    assert res.beta == 1.0 and res.ess == pytest.approx(55)
    # equal to n_min exactly counts as inside
    res = find_inflation(ll, 55, 60)
    assert res.beta == 1.0


@pytest.mark.parametrize(
    "N, n_min, n_max, scales",
    [
        (256, 50, 60, [0.3, 1.0, 3.0, 10.0, 100.0, 1e3]),
        (100, 20, 25, [1.0, 10.0, 1e2, 1e3, 1e4]),
        (64, 32, 32.5, [5.0, 1e4]),  # a narrow interval
    ],
)
def test_returned_beta_puts_ess_in_the_interval(N, n_min, n_max, scales):
    inflated = 0
    for scale in scales:
        for seed in range(8):
            ll = _log_likelihoods(seed, N, scale)
            res = find_inflation(ll, n_min, n_max)
            assert isinstance(res, InflationResult) and res.converged
            assert res.ess_untempered == pytest.approx(_ess_direct(ll), rel=1e-9)
            # the reported ESS and weights are those of the returned beta
            assert res.ess == pytest.approx(_ess_direct(res.beta * ll), rel=1e-9)
            assert torch.allclose(res.log_weights, torch.log_softmax(res.beta * ll, 0))
            assert res.log_weights.dtype == torch.float64 and res.log_weights.shape == (N,)
            if res.ess_untempered >= n_min:
                assert res.beta == 1.0
            else:
                inflated += 1
                assert 1e-12 <= res.beta < 1.0
                assert n_min <= res.ess <= n_max
                assert 1 <= res.iterations <= 100
    assert inflated >= len(scales) * 8 // 2  # the test did exercise the bisection


def test_ess_is_non_increasing_in_beta_for_uniform_prior():
    betas = torch.logspace(-12, 0, 400, dtype=torch.float64)
    for seed, scale in [(0, 1.0), (1, 100.0), (2, 1e4)]:
        ll = _log_likelihoods(seed, 256, scale)
        ll[::7] = -math.inf  # incompatible particles do not change the monotonicity
        curve = torch.tensor([ess(b * ll) for b in betas])
        assert (curve[1:] <= curve[:-1] * (1 + 1e-10)).all()
        assert curve[0] > curve[-1]


def test_ess_is_not_monotone_with_a_non_uniform_prior_yet_bisection_succeeds():
    # pi = (0.99, 0.01), l = (0, 50): ESS goes ~1 -> 2 -> ~1 as beta grows
    prior = torch.log(torch.tensor([0.99, 0.01], dtype=torch.float64))
    ll = torch.tensor([0.0, 50.0], dtype=torch.float64)
    betas = torch.logspace(-6, 0, 300, dtype=torch.float64)
    curve = torch.tensor([ess(prior + b * ll) for b in betas])
    peak = int(curve.argmax())
    assert curve[peak] > 1.99 and curve[0] < 1.03 and curve[-1] < 1.01
    assert 0 < peak < len(betas) - 1
    res = find_inflation(ll, 1.5, 1.6, prior_log_weights=prior)
    assert res.converged and 1.5 <= res.ess <= 1.6


def test_non_uniform_prior_unreachable_target_returns_the_best_beta_tried():
    prior = torch.log(torch.tensor([0.99, 0.01], dtype=torch.float64))
    ll = torch.tensor([0.0, 50.0], dtype=torch.float64)
    res = find_inflation(ll, 2.0, 2.0, prior_log_weights=prior)  # the peak is just below 2
    assert not res.converged and 1e-12 < res.beta < 1
    assert res.ess > 1.5 > ess(prior + 1e-12 * ll)  # better than beta_min (and beta = 1)
    assert res.ess == pytest.approx(ess(prior + res.beta * ll), rel=1e-12)


def test_max_iter_exhausted_returns_the_conservative_bracket_end():
    ll = _log_likelihoods(0, 256, 100.0)
    res = find_inflation(ll, 50, 50.0001, max_iter=2)
    assert not res.converged and res.iterations == 2 and res.ess >= 50
    res = find_inflation(ll, 50, 50.0001)
    assert res.converged and 50 <= res.ess <= 50.0001


def test_beta_min_is_returned_when_it_is_not_enough():
    # one particle dominates by 1e20 nats: even beta = 1e-12 leaves ESS ~ 1
    ll = torch.full((100,), -1e20, dtype=torch.float64)
    ll[0] = 0.0
    res = find_inflation(ll, 20, 30)
    assert res.beta == 1e-12 and not res.converged
    assert res.ess < 20 and res.ess == pytest.approx(1.0)
    assert torch.isfinite(res.log_weights).all()
    # the same with an explicit uniform prior (possibly with zero-weight particles)
    prior = torch.zeros(100, dtype=torch.float64)
    prior[50:] = -math.inf
    res = find_inflation(ll, 20, 30, prior_log_weights=prior)
    assert res.beta == 1e-12 and not res.converged and res.iterations == 0
    # a larger beta_min is honoured too
    res = find_inflation(_log_likelihoods(0, 100, 1e4), 20, 30, beta_min=1e-2)
    assert res.beta == 1e-2 and not res.converged and res.ess < 20


def test_some_incompatible_particles_get_zero_weight():
    ll = _log_likelihoods(3, 256, 100.0)
    ll[:100] = -math.inf
    res = find_inflation(ll, 50, 60)
    assert res.converged and 50 <= res.ess <= 60 and res.beta < 1
    assert torch.isneginf(res.log_weights[:100]).all()
    assert torch.isfinite(res.log_weights[100:]).all()
    assert float(torch.logsumexp(res.log_weights, 0)) == pytest.approx(0.0, abs=1e-12)


def test_tempering_equals_inflating_the_observation_covariance():
    # beta * log N(y; h_i, S) and log N(y; h_i, S / beta) agree after normalisation
    # (docs/method.md#inflation)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(128, 4, generator=g, dtype=torch.float64) * 3
    y = torch.zeros(4, dtype=torch.float64)
    S = torch.diag(torch.tensor([0.1, 0.2, 0.5, 1.0], dtype=torch.float64))
    ll = torch.distributions.MultivariateNormal(h, S).log_prob(y)
    res = find_inflation(ll, 20, 25)
    assert res.beta < 1
    inflated = torch.distributions.MultivariateNormal(h, S / res.beta).log_prob(y)
    assert torch.allclose(res.log_weights, torch.log_softmax(inflated, 0), atol=1e-10)


# ---- find_inflation: the prior -----------------------------------------------------------


def test_prior_log_weights_enter_the_formula():
    N = 256
    ll = _log_likelihoods(4, N, 30.0)
    g = torch.Generator().manual_seed(5)
    prior = 0.5 * torch.randn(N, generator=g, dtype=torch.float64) + 7.0  # unnormalised
    res = find_inflation(ll, 50, 60, prior_log_weights=prior)
    assert res.converged and res.beta < 1
    expected = torch.log_softmax(prior + res.beta * ll, 0)
    assert torch.allclose(res.log_weights, expected, atol=1e-12)
    assert res.ess == pytest.approx(_ess_direct(prior + res.beta * ll), rel=1e-9)
    assert res.ess_untempered == pytest.approx(_ess_direct(prior + ll), rel=1e-9)
    plain = find_inflation(ll, 50, 60)
    assert not torch.allclose(res.log_weights, plain.log_weights)
    # a constant prior is the uniform prior
    same = find_inflation(ll, 50, 60, prior_log_weights=torch.full((N,), -3.0))
    assert same.beta == plain.beta and torch.allclose(same.log_weights, plain.log_weights)
    # a -inf prior entry is a zero-weight particle, like a -inf log-likelihood
    prior_z = torch.zeros(N, dtype=torch.float64)
    prior_z[:40] = -math.inf
    ll_z = ll.clone()
    ll_z[:40] = -math.inf
    a = find_inflation(ll, 50, 60, prior_log_weights=prior_z)
    b = find_inflation(ll_z, 50, 60)
    assert a.beta == b.beta and torch.equal(a.log_weights, b.log_weights)


# ---- find_inflation: invalid inputs ------------------------------------------------------


def test_all_incompatible_particles_raise_a_clear_error():
    with pytest.raises(ValueError, match="log_likelihoods.*no particle is compatible"):
        find_inflation(torch.full((10,), -math.inf), 2, 5)
    ll = torch.zeros(10)
    ll[:5] = -math.inf
    prior = torch.zeros(10)
    prior[5:] = -math.inf
    with pytest.raises(ValueError, match="no particle .* compatible"):
        find_inflation(ll, 2, 5, prior_log_weights=prior)


@pytest.mark.parametrize(
    "ll, n_min, n_max, kwargs, match",
    [
        (torch.tensor([0.0, math.nan, 1.0]), 1, 2, {}, "log_likelihoods.*NaN"),
        (torch.tensor([0.0, math.inf, 1.0]), 1, 2, {}, r"log_likelihoods.*\+inf"),
        (torch.zeros(10), 6, 5, {}, "n_min.*n_max.*6.*5"),
        (torch.zeros(10), 0.5, 5, {}, "n_min.*0.5"),
        (torch.zeros(10), 2, 11, {}, "n_max.*N = 10.*11"),
        (torch.zeros(10), math.nan, 5, {}, "finite"),
        (torch.zeros(10), 2, 5, {"prior_log_weights": torch.zeros(9)}, "prior_log_weights.*9"),
        (
            torch.zeros(10),
            2,
            5,
            {"prior_log_weights": torch.full((10,), math.nan)},
            "prior_log_weights.*NaN",
        ),
        (torch.zeros(10), 2, 5, {"beta_min": 0.0}, "beta_min"),
        (torch.zeros(10), 2, 5, {"max_iter": -1}, "max_iter"),
        (torch.zeros(0), 1, 1, {}, "log_likelihoods.*empty"),
        (torch.zeros(3, 2), 1, 2, {}, "log_likelihoods.*shape"),
    ],
)
def test_invalid_inputs_raise_value_errors(ll, n_min, n_max, kwargs, match):
    with pytest.raises(ValueError, match=match):
        find_inflation(ll, n_min, n_max, **kwargs)
