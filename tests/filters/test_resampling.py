"""Properties of genfilter.filters.resampling (docs/method.md#resampling)."""

import math

import pytest
import torch

from genfilter.filters.resampling import (
    SCHEMES,
    _inverse_cdf,
    multinomial,
    resample,
    residual,
    stratified,
    systematic,
)

R = 4000  # repetitions for the statistical tests
N = 10


def _weights(seed: int = 0, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, generator=g, dtype=torch.float64) ** 2  # unequal, some small
    return w / w.sum()


def _counts(scheme, w: torch.Tensor, M: int, seed: int = 1, reps: int = R) -> torch.Tensor:
    """Offspring counts ``(reps, N)`` of ``reps`` independent draws."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [torch.bincount(scheme(w, M, g), minlength=w.shape[0]) for _ in range(reps)]
    ).to(torch.float64)


@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize("M", [N, 7])
def test_offspring_counts_are_unbiased(name, M):
    w = _weights()
    counts = _counts(SCHEMES[name], w, M)
    assert (counts.sum(1) == M).all()
    mean, var = counts.mean(0), counts.var(0)
    se = (var / R).sqrt()
    # 5 standard errors each; exact when a count has no variance (systematic, M w_i integer)
    assert ((mean - M * w).abs() <= 5 * se + 1e-9).all(), (mean, M * w, se)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_ancestors_are_sorted_int64_in_range(name):
    w = _weights(3, n=50)
    g = torch.Generator().manual_seed(0)
    for M in (1, 13, 50, 200):
        a = SCHEMES[name](w, M, g)
        assert a.shape == (M,) and a.dtype == torch.int64
        assert (a[1:] >= a[:-1]).all()
        assert a.min() >= 0 and a.max() < 50


def test_systematic_counts_are_floor_or_ceil_and_vary_less_than_multinomial():
    w = _weights()
    M = N
    counts = _counts(systematic, w, M)
    lo, hi = torch.floor(M * w), torch.ceil(M * w)
    assert ((counts == lo) | (counts == hi)).all()
    var_multinomial = M * w * (1 - w)
    assert (counts.var(0) <= var_multinomial).all()
    # the known closed form: frac(M w)(1 - frac(M w))
    frac = M * w - lo
    assert torch.allclose(counts.var(0), frac * (1 - frac), atol=0.02)


def test_multinomial_counts_have_multinomial_variance():
    w = _weights()
    counts = _counts(multinomial, w, N)
    # relative error of a sample variance with R = 4000 is a few percent
    assert torch.allclose(counts.var(0), N * w * (1 - w), rtol=0.15)


def test_residual_keeps_deterministic_copies():
    w = _weights()
    for M in (N, 7, 37):
        counts = _counts(residual, w, M, reps=500)
        assert (counts >= torch.floor(M * w)).all()
        assert (counts <= torch.floor(M * w) + (M - torch.floor(M * w).sum())).all()


def test_stratified_counts_stay_within_one_of_floor_ceil():
    # each stratum holds one point, so a particle spanning k strata gets between k-1 and k+1
    w = _weights()
    counts = _counts(stratified, w, N, reps=1000)
    assert (counts >= torch.floor(N * w) - 1).all() and (counts <= torch.ceil(N * w) + 1).all()


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_degenerate_weight_selects_one_particle(name):
    lw = torch.full((N,), -math.inf, dtype=torch.float64)
    lw[6] = -3.0
    g = torch.Generator().manual_seed(0)
    for M in (1, N, 31):
        a = resample(lw, name, M, g)
        assert (a == 6).all() and a.shape == (M,)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_zero_weight_particles_are_never_selected(name):
    w = _weights(5, n=40)
    w[::3] = 0.0
    w[-1] = 0.0  # the last particle too: the CDF must not reach the index N
    w = w / w.sum()
    counts = _counts(SCHEMES[name], w, 40, reps=300)
    assert (counts[:, w == 0] == 0).all()


def test_inverse_cdf_at_the_ends_of_the_unit_interval():
    # u = 0 must not pick a leading zero-weight particle; u rounded up to 1.0 (possible for
    # (U + M - 1) / M) must not give the index N nor a trailing zero-weight particle.
    w = torch.tensor([0.0, 0.3, 0.0, 0.7, 0.0, 0.0], dtype=torch.float64) / 1.7  # sum != 1
    u = torch.tensor([0.0, 0.1, 0.29, 0.31, 0.5, math.nextafter(1.0, 0.0), 1.0])
    a = _inverse_cdf(u.double(), w / 3)
    assert a.tolist() == [1, 1, 1, 3, 3, 3, 3]


@pytest.mark.parametrize("n", [7, 49, 100, 256])
def test_uniform_weights_give_each_particle_once(n):
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    arange = torch.arange(n)
    for _ in range(20):
        assert torch.equal(systematic(w, generator=g), arange)
        assert torch.equal(resample(torch.zeros(n), "systematic", generator=g), arange)
        assert torch.equal(stratified(w, generator=g), arange)
        # 49 * (1 / 49) < 1 in float64: residual must still keep every deterministic copy
        assert torch.equal(residual(w, generator=g), arange)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_randomness_comes_only_from_the_generator(name):
    lw = torch.log(_weights(2, n=64)).float()
    torch.manual_seed(123)
    a1 = resample(lw, name, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(999)
    state = torch.get_rng_state()
    a2 = resample(lw, name, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not touched
    assert torch.equal(a1, a2)
    a3 = resample(lw, name, generator=torch.Generator().manual_seed(8))
    if name != "residual":  # residual may leave little to chance; the others vary
        assert not torch.equal(a1, a3)


def test_resample_normalises_huge_log_weights_without_overflow():
    # exp(1e4) overflows: the log-weights must be shifted by their logsumexp first
    lw = torch.tensor([1e4, 1e4 - math.log(3.0), -1e4], dtype=torch.float64)
    a = resample(lw, "systematic", 4000, torch.Generator().manual_seed(0))
    assert torch.bincount(a, minlength=3).tolist() == [3000, 1000, 0]


def test_resample_returns_on_the_device_and_default_M():
    lw = torch.randn(33, generator=torch.Generator().manual_seed(0))
    a = resample(lw, generator=torch.Generator().manual_seed(0))
    assert a.shape == (33,) and a.device == lw.device


@pytest.mark.parametrize(
    "lw, match",
    [
        (torch.tensor([0.0, math.nan, 0.0]), "log_weights.*NaN"),
        (torch.tensor([0.0, math.inf, 0.0]), r"log_weights.*\+inf"),
        (torch.full((4,), -math.inf), "log_weights.*all -inf"),
        (torch.zeros(0), "log_weights.*empty"),
        (torch.zeros(2, 3), r"log_weights.*shape"),
    ],
)
def test_resample_rejects_invalid_log_weights(lw, match):
    with pytest.raises(ValueError, match=match):
        resample(lw)


@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize(
    "w, match",
    [
        (torch.tensor([0.5, -0.1, 0.6]), "weights.*non-negative"),
        (torch.tensor([0.5, math.nan, 0.5]), "weights.*NaN"),
        (torch.tensor([0.5, math.inf, 0.5]), "weights.*inf"),
        (torch.zeros(3), "weights.*all zero"),
        (torch.zeros(0), "weights.*empty"),
    ],
)
def test_schemes_reject_invalid_weights(name, w, match):
    with pytest.raises(ValueError, match=match):
        SCHEMES[name](w)


def test_unknown_scheme_and_bad_M_are_rejected():
    with pytest.raises(
        ValueError,
        match="unknown resampling scheme 'sistematic'.*systematic.*"
        "stratified.*residual.*multinomial",
    ):
        resample(torch.zeros(3), "sistematic")
    for M in (0, -2):
        with pytest.raises(ValueError, match="M"):
            resample(torch.zeros(3), "systematic", M)
    with pytest.raises(TypeError, match="M"):
        systematic(torch.ones(3) / 3, 2.5)


def test_unnormalised_weights_are_renormalised():
    w = _weights()
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for name, scheme in SCHEMES.items():
        assert torch.equal(scheme(w * 3.7, 25, g1), scheme(w, 25, g2)), name
