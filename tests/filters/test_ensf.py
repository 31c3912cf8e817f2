"""Properties of the ensemble score filter (Bao, Zhang & Zhang 2024; docs/method.md#ensf)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_lg_model, simulate_lg
from exact_linear import ExactLinearEmulator

from genfilter.filters.base import assimilate
from genfilter.filters.ensf import EnSF
from genfilter.filters.forecast import Forecast
from genfilter.observations import (
    Lambda,
    Observation,
    Select,
    isotropic_noise,
    synthetic_observations,
)


class Identity:
    """An emulator whose forecast is the input (so ``update`` sees a chosen ensemble)."""

    def sample(self, x, *, generator=None):
        return x.clone()


def linear_map(eps_alpha=0.5, eps_beta=0.025, K=500, solver="em"):
    """The paired-score reverse sampler without likelihood is linear, member by member:
    Z_K = a Z_0 + c x^f + η with η ~ N(0, v).  Returns (a, c, v) from the EnSF formulas,
    coded here independently of the filter (α, β², b, σ² at t_n = 1 − n/K)."""
    a, c, v, dt = 1.0, 0.0, 0.0, 1.0 / K
    for n in range(K):
        t = 1.0 - n / K
        al = 1 - (1 - eps_alpha) * t
        b2 = eps_beta + (1 - eps_beta) * t
        b = -(1 - eps_alpha) / al
        s2 = (1 - eps_beta) + 2 * (1 - eps_alpha) * b2 / al
        w = 1.0 if solver == "em" else 0.5
        fac = 1 - dt * b - w * dt * s2 / b2
        a, c = a * fac, c * fac + w * dt * s2 * al / b2
        v = v * fac**2 + (dt * s2 if solver == "em" else 0.0)
    return a, c, v


# ---- no observation: the forecast distribution survives up to ε_β ------------------------


def test_prior_only_reproduces_the_spec_numeric_check():
    """The EnSF interpretation (docs/baselines.md): paired score, no likelihood, ε_α = 0.5,
    ε_β = 0.025, K = 500, prior member 2.0 → output mean 1.988, variance 0.026.  With N = 20000
    independent members the MC sd of the mean is sqrt(0.026/N) ≈ 0.0011 and of the variance
    0.026·sqrt(2/N) ≈ 0.00026: the mean is within 5 sd of the exact discrete value 2c and
    of 1.988 ± 0.001 (rounding), the variance within 5 sd of a² + v ≈ 0.02603."""
    N = 20000
    f = EnSF(Identity(), generator=0)
    xa, diag = f.update(torch.full((N, 1), 2.0, dtype=torch.float64), None)
    a, c, v = linear_map()
    mean, var = float(xa.mean()), float(xa.var())
    sd_mean, sd_var = math.sqrt((a * a + v) / N), (a * a + v) * math.sqrt(2 / N)
    print(
        f"EnSF prior-only: mean {mean:.4f} (exact {2 * c:.4f}), var {var:.5f} "
        f"(exact {a * a + v:.5f})"
    )
    assert abs(2 * c - 1.988) < 0.001 and abs(a * a + v - 0.026) < 0.0005
    assert abs(mean - 2 * c) < 5 * sd_mean
    assert abs(var - (a * a + v)) < 5 * sd_var
    assert diag["clipped"] == 0


@pytest.mark.parametrize("solver", ["em", "pf"])
def test_gaussian_forecast_keeps_its_mean_and_gains_eps_beta_variance(solver):
    """Paired score, no likelihood, forecast x^f ~ N(1, 0.5²) in D = 3, N = 4000.

    Each member maps to Z_K = a Z_0 + c x_i^f + η_i (the sampler is linear, see
    :func:`linear_map`), with Z_0 ~ N(0, 1) and η_i ~ N(0, v) independent of x^f, so
    mean_a = c·mean_f and var_a = c²·var_f + a² + v.
    - Euler–Maruyama: c = 0.994, a² + v = 0.026, i.e. mean preserved to 0.6 % and
      var_a ≈ var_f + ε_β — ε_β is additive inflation (docs/method.md#ensf).
    - probability-flow: the ODE keeps the mismatch between the start N(0, 1) and the true
      t = 1 marginal N(ε_α x^f, 1): in continuous time z_0 = x^f + √ε_β (z_1 − ε_α x^f),
      so c = 1 − ε_α √ε_β ≈ 0.92 (mean shrunk by 8 % towards 0 in normalised units) and
      a² = ε_β; checked against the discrete values (c_pf ≈ 0.90).
    Tolerances: 5 MC sd (mean sd ≈ sqrt(0.28/4000) = 0.008; variance sd ≈ 0.28·sqrt(2/4000)
    = 0.006) on the *exact* discrete prediction given the sample mean/variance of x^f."""
    g = torch.Generator().manual_seed(0)
    xf = 1.0 + 0.5 * torch.randn(4000, 3, generator=g, dtype=torch.float64)
    xa, _ = EnSF(Identity(), solver=solver, generator=1).update(xf, None)
    a, c, v = linear_map(solver=solver)
    N = xf.shape[0]
    pred_mean = c * xf.mean(0)
    pred_var = c * c * xf.var(0) + a * a + v
    assert ((xa.mean(0) - pred_mean).abs() < 5 * torch.sqrt(pred_var / N)).all()
    assert ((xa.var(0) - pred_var).abs() < 5 * pred_var * math.sqrt(2 / N)).all()
    if solver == "em":
        assert abs(c - 1) < 0.01 and abs(a * a + v - 0.025) < 0.002
    else:
        assert abs(c - (1 - 0.5 * math.sqrt(0.025))) < 0.03 and abs(a * a - 0.025) < 0.005


def test_mixture_score_without_observation_adds_eps_beta():
    """Mixture score (N = 300, centred forecast N(0, 0.2²) in D = 3, K = 200): the sampler
    targets the empirical ensemble ⊛ N(0, ε_β), so mean_a ≈ mean_f (sd of the
    resampling-like noise sqrt(0.065/300) ≈ 0.015; bound 4 sd) and the component-averaged
    var_a − var_f ≈ ε_β = 0.025.  Measured over 12 seeds: 0.029 ± 0.003 (the small excess
    is discretisation); bound ± 0.012.  A small forecast spread keeps the sampling noise of
    the variance (≈ 0.003) well below ε_β.  Centred on purpose: measured, for mean_f = 1
    and 3 (spread 0.5) the output mean is shrunk towards 0 by ≈ 6 % — the start N(0, I)
    differs from the t = 1 marginal by ε_α·mean_f and the mixture's member selection does
    not forget it (normalise with the climatological mean)."""
    g = torch.Generator().manual_seed(0)
    xf = 0.2 * torch.randn(300, 3, generator=g, dtype=torch.float64)
    xa, _ = EnSF(Identity(), score="mixture", steps=200, generator=1).update(xf, None)
    assert ((xa.mean(0) - xf.mean(0)).abs() < 0.06).all()
    excess = float((xa.var(0) - xf.var(0)).mean())
    assert abs(excess - 0.025) < 0.012


def test_zero_damping_is_no_observation_and_none_is_forecast_only():
    """h ≡ 0 switches the likelihood off: the analysis equals the prior-only map bit for
    bit (same generator).  In ``step``, ``obs=None`` skips the analysis (forecast
    only) and returns the forecast itself."""
    g = torch.Generator().manual_seed(0)
    xf = torch.randn(50, 3, generator=g, dtype=torch.float64)
    obs = Observation(
        torch.tensor([1.0, -1.0], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.3)
    )
    xa_h0, _ = EnSF(Identity(), damping=lambda t: 0.0, steps=50, generator=5).update(xf, obs)
    xa_none, _ = EnSF(Identity(), steps=50, generator=5).update(xf, None)
    assert torch.equal(xa_h0, xa_none)
    f = EnSF(Identity(), steps=50, generator=5)
    ens, info = f.step(f.init(xf), None)
    assert torch.equal(ens.particles, xf)
    assert info.spread_forecast == info.spread_analysis


# ---- with an observation ----------------------------------------------------------------


@pytest.mark.parametrize("score, N, steps", [("paired", 2000, 500), ("mixture", 500, 100)])
def test_linear_observation_pulls_the_analysis_towards_y(score, N, steps):
    """Forecast N(0, I) in D = 2, y = 2 observing x_0 with σ_y = 0.5: the Kalman mean of
    x_0 is 2·1/(1 + 0.25) = 1.6.  EnSF is not a Bayesian update (docs/method.md#ensf), so we only
    claim that the analysis mean of x_0 moves from the forecast mean towards the Kalman mean and
    stays below y, and that the unobserved x_1 keeps its mean (5 sd).  Measured: paired
    0.00 → 0.39 (a per-member nudge of size ~ε_β), mixture −0.03 → 1.64 (variance 0.13
    against Kalman 0.2; at N = 2000, K = 500: 1.65 / 0.128)."""
    g = torch.Generator().manual_seed(0)
    xf = torch.randn(N, 2, generator=g, dtype=torch.float64)
    obs = Observation(torch.tensor([2.0], dtype=torch.float64), Select([0]), isotropic_noise(0.5))
    xa, _ = EnSF(Identity(), score=score, steps=steps, generator=1).update(xf, obs)
    mf, ma, kalman = float(xf[:, 0].mean()), float(xa[:, 0].mean()), 1.6
    print(f"EnSF-{score}: observed mean {mf:.3f} -> {ma:.3f} (Kalman {kalman})")
    assert mf + 0.2 < ma < 2.0
    assert abs(ma - kalman) < abs(mf - kalman)
    assert abs(float(xa[:, 1].mean() - xf[:, 1].mean())) < 5 * math.sqrt(1.1 / N)


def test_normalisation_is_equivariant():
    """With mean/std normalisation the filter works on z = (x − m)/s and applies H to
    de-normalised states: the analysis of x' = m + s·x, observed as y' = m_obs + s·y with
    σ_y' = s·σ_y, is m + s·(analysis of x) for the same generator."""
    g = torch.Generator().manual_seed(0)
    xf = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0.7, -0.2], dtype=torch.float64)
    m = torch.tensor([10.0, -5.0, 2.0], dtype=torch.float64)
    s = torch.tensor([4.0, 4.0, 4.0], dtype=torch.float64)
    obs = Observation(y, Select([0, 2]), isotropic_noise(0.5))
    obs_phys = Observation(m[[0, 2]] + 4.0 * y, Select([0, 2]), isotropic_noise(2.0))
    za, _ = EnSF(Identity(), steps=100, generator=3).update(xf, obs)
    xa, _ = EnSF(Identity(), steps=100, mean=m, std=s, generator=3).update(m + s * xf, obs_phys)
    torch.testing.assert_close(xa, m + s * za)


def test_clipped_score_components_are_counted():
    """A tiny clip (0.5) clips many components and the count reaches StepInfo.extra; the
    defaults clip nothing on this O(1) problem."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20, 3, generator=g, dtype=torch.float64)
    obs = Observation(torch.tensor([3.0], dtype=torch.float64), Select([1]), isotropic_noise(0.1))
    for clip, expect in ((0.5, True), (1000.0, False)):
        f = EnSF(Identity(), steps=50, score_clip=clip, generator=1)
        _, info = f.step(f.init(x0), obs)
        assert info.spread_forecast is not None and info.spread_analysis is not None
        assert set(info.extra) >= {"clipped", "clipped_fraction"}
        assert (info.extra["clipped"] > 0) == expect
        assert 0.0 <= info.extra["clipped_fraction"] <= 1.0


def test_standardized_terminal_noise_and_probability_flow_are_exact_on_the_mean():
    """With standardised terminal noise (mean 0 across members) and the deterministic
    probability-flow solver, the prior-only map is Z_K = a Z_0 + c x^f exactly, so the
    analysis mean is c·mean_f to rounding."""
    g = torch.Generator().manual_seed(0)
    xf = 1.0 + torch.randn(30, 2, generator=g, dtype=torch.float64)
    f = EnSF(Identity(), steps=100, solver="pf", standardize_init=True, generator=2)
    xa, _ = f.update(xf, None)
    _, c, _ = linear_map(K=100, solver="pf")
    torch.testing.assert_close(xa.mean(0), c * xf.mean(0), rtol=0, atol=1e-10)


# ---- filtering ---------------------------------------------------------------------------


def test_reduces_error_of_the_free_forecast_on_the_linear_gaussian_model():
    """conftest model (D = 4, x_0 and x_2 observed, σ_y = 0.5), N = 50, 30 cycles, exact
    linear forecast: the RMSE of the EnSF mean (defaults, paired) is below 0.9× the free
    forecast's.  Measured: 1.51 vs 1.93 (Kalman filter 0.95)."""
    model = make_lg_model()
    K = 30
    truth = simulate_lg(model, K, seed=1)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(0.5), generator=torch.Generator().manual_seed(2)
    )
    em = ExactLinearEmulator(model.A, model.b, model.Q)
    x0 = torch.randn(50, model.D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ensf = assimilate(EnSF(em, generator=4), x0, obs, truth, progress=False)
    free = assimilate(Forecast(em, generator=4), x0, obs, truth, progress=False)
    e_a = float(((ensf.means - truth) ** 2).mean().sqrt())
    e_f = float(((free.means - truth) ** 2).mean().sqrt())
    print(f"EnSF RMSE {e_a:.3f} vs free forecast {e_f:.3f}")
    assert e_a < 0.9 * e_f
    assert all(i.ess == 50 for i in ensf.infos)
    assert ensf.final.is_uniform()


# ---- hyperparameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"eps_alpha": 0.0}, "eps_alpha"),
        ({"eps_alpha": 1.5}, "eps_alpha"),
        ({"eps_beta": -0.1}, "eps_beta"),
        ({"eps_beta": 1.0}, "eps_beta"),
        ({"score": "gaussian"}, "score"),
        ({"damping": 3.0}, "damping"),
        ({"damping": lambda t: -1.0}, "damping"),
        ({"damping": lambda t: float("nan")}, "damping"),
        ({"score_clip": 0.0}, "score_clip"),
        ({"score_clip": float("nan")}, "score_clip"),
        ({"solver": "dpm"}, "solver"),
        ({"inflation": 0.9}, "inflation"),
        ({"mixture_chunk": 0}, "mixture_chunk"),
        ({"std": 0.0}, "std"),
        ({"mean": float("inf")}, "mean"),
    ],
)
def test_bad_hyperparameters_are_rejected_by_name(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        EnSF(Identity(), **kwargs)


def test_bad_inputs_are_rejected():
    with pytest.raises(TypeError, match="sample"):
        EnSF(object())
    f = EnSF(Identity(), std=torch.ones(5))
    with pytest.raises(ValueError, match="std"):
        f.init(torch.zeros(4, 3))


def test_float32_fields_nonlinear_h_missing_values_and_chunking():
    """Works on (N, 2, 3) float32 states with a nonlinear H (arctan of one row, as in the
    EnSF paper) and a missing value; the mixture result does not depend on
    ``mixture_chunk`` beyond rounding."""
    g = torch.Generator().manual_seed(0)
    xf = torch.randn(40, 2, 3, generator=g)
    y = torch.tensor([0.5, float("nan"), -0.3])
    obs = Observation(y, Lambda(lambda x: torch.arctan(x[:, 0, :])), isotropic_noise(0.1))
    out = []
    for chunk in (None, 7):
        f = EnSF(Identity(), steps=100, score="mixture", mixture_chunk=chunk, generator=1)
        ens, _ = f.step(f.init(xf), obs)
        assert ens.particles.dtype == torch.float32 and ens.particles.shape == xf.shape
        out.append(ens.particles)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-5)


def test_mixture_blocks_do_not_change_a_bit():
    """The mixture term is computed in blocks of query rows (``_MIXTURE_ELEMENTS``, for cache
    locality); rows are independent, so any block size gives the identical result — the
    Lorenz-63 ensemble-size cells computed with one block and with eight must agree."""
    from genfilter.filters.ensf import _MIXTURE_ELEMENTS, _mixture_averages

    g = torch.Generator().manual_seed(3)
    n = 2 * _MIXTURE_ELEMENTS // 64  # several default blocks
    q, c = 8 * torch.randn(n, 3, generator=g), 8 * torch.randn(n, 3, generator=g)
    v, bias = torch.randn(n, 3, generator=g), torch.randn(n, generator=g)
    ref, ref_arg = _mixture_averages(q, c, 0.3, v, (None, bias), chunk=n)
    for chunk in (None, 64, 100):
        out, arg = _mixture_averages(q, c, 0.3, v, (None, bias), chunk=chunk)
        assert torch.equal(arg, ref_arg)
        for a, b in zip(out, ref):
            assert torch.equal(a, b), chunk
    # one row per block is a matrix-vector product: BLAS may use another kernel (measured on
    # an Intel Xeon: last-bit differences), so only agreement to rounding is guaranteed
    out, arg = _mixture_averages(q, c, 0.3, v, (None, bias), chunk=1)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # float32 values
