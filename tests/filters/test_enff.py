"""Properties of the ensemble flow filter (Transue et al. 2025; docs/method.md#enff)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lg_model, simulate_lg
from exact_linear import ExactLinearEmulator

from genfilter.filters.base import assimilate
from genfilter.filters.enff import EnFF
from genfilter.filters.forecast import Forecast
from genfilter.observations import (
    Identity,
    Lambda,
    Observation,
    Select,
    isotropic_noise,
    synthetic_observations,
)


class Shift:
    """Deterministic emulator x -> x + increment (forecast member i comes from member i)."""

    def __init__(self, increment):
        self.increment = increment

    def sample(self, x, *, generator=None):
        return x + self.increment


def _members(seed, N, D, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(N, D, generator=g, dtype=torch.float64), g


# ---- F2P: fixed-gain nudging ------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.5])
def test_f2p_with_local_guidance_is_fixed_gain_nudging(gamma):
    """EnFF interpretation (docs/method.md#enff): H = I, Σ_y = σ_y² I, σ_min = 1e-3 ≪ distance
    between members' paths (N = 5, D = 50, so paths do not cross), K = 11: the analysis is
    x_i^a = x1^(i) + (1 − (1 − γΔ)^{K−1}) (y − x1^(i)), γ = λ/σ_y², Δ = 1/(K − 1), up to the
    source noise σ_min ξ_i (1 − γΔ)^{K−1}: bound 5 σ_min.  Measured max deviation
    2.2e-3, 1.3e-3, 0.7e-3 at γ = 0.5, 1, 1.5 (gains 0.40, 0.65, 0.80) — exactly
    σ_min max|ξ| (1 − γΔ)^{K−1}.  Strong guidance breaks it: see the next test."""
    N, D, K, sigma_y, sigma_min = 5, 50, 11, 0.5, 1e-3
    x0, g = _members(0, N, D)
    x1 = x0 + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64)
    y = x1.mean(0) + torch.randn(D, generator=g, dtype=torch.float64)
    obs = Observation(y, Identity(), isotropic_noise(sigma_y))
    lam = gamma * sigma_y**2
    f = EnFF(Shift(0.0), path="f2p", sigma_min=sigma_min, guidance_scale=lam, steps=K, generator=1)
    xa, diag = f.update(x1, obs, previous=x0)
    gain = 1 - (1 - gamma / (K - 1)) ** (K - 1)
    dev = (xa - (x1 + gain * (y - x1))).abs().max().item()
    print(f"EnFF-F2P nudging, gamma {gamma}: gain {gain:.3f}, max deviation {dev:.2e}")
    assert dev < 5 * sigma_min
    assert diag["pair_switches"] == 0


def test_f2p_strong_guidance_switches_pairs_and_the_diagnostic_reports_it():
    """Same setup with γ = 4 (gain 0.994): the guidance drives every member so close to y
    that it becomes nearer to another member's path than to its own, the softmax switches
    pair and the member inherits that increment — the path-crossing pitfall (docs/baselines.md),
    here in D = 50 (measured: 27 switched (member, step) pairs, deviation 0.12; switching starts
    near gain 0.85 for this configuration).  ``pair_switches`` reports it."""
    N, D, K, sigma_y = 5, 50, 11, 0.5
    x0, g = _members(0, N, D)
    x1 = x0 + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64)
    y = x1.mean(0) + torch.randn(D, generator=g, dtype=torch.float64)
    obs = Observation(y, Identity(), isotropic_noise(sigma_y))
    f = EnFF(Shift(0.0), sigma_min=1e-3, guidance_scale=4 * sigma_y**2, steps=K, generator=1)
    xa, diag = f.update(x1, obs, previous=x0)
    gain = 1 - (1 - 4 / (K - 1)) ** (K - 1)
    assert diag["pair_switches"] > 0
    assert (xa - (x1 + gain * (y - x1))).abs().max() > 0.01


def test_f2p_without_guidance_returns_the_forecast():
    """λ = 0: every member follows its own straight path x0^(i) → x1^(i) and lands on its
    own forecast up to σ_min ξ (the source noise is carried unchanged)."""
    x0, g = _members(0, 6, 20)
    x1 = x0 + torch.randn(6, 20, generator=g, dtype=torch.float64)
    obs = Observation(torch.zeros(20, dtype=torch.float64), Identity(), isotropic_noise(1.0))
    f = EnFF(Shift(0.0), sigma_min=1e-4, guidance_scale=0.0, steps=5, generator=1)
    xa, _ = f.update(x1, obs, previous=x0)
    assert (xa - x1).abs().max() < 5e-4


def test_step_pairs_each_forecast_with_its_own_previous_member():
    """``init`` and ``step`` keep the previous analysis in ``Ensemble.extra["previous"]``;
    the forecast of member i is drawn from member i, so with a deterministic emulator
    (x → x + δ) and λ = 0 each member ends at its own forecast, and no pair switches."""
    x0, _ = _members(0, 8, 30)
    delta = torch.linspace(-1, 1, 30, dtype=torch.float64)
    f = EnFF(Shift(delta), sigma_min=1e-4, guidance_scale=0.0, steps=4, generator=1)
    ens = f.init(x0)
    assert torch.equal(ens.extra["previous"], x0)
    obs = Observation(torch.zeros(30, dtype=torch.float64), Identity(), isotropic_noise(1.0))
    ens2, info = f.step(ens, obs)
    assert (ens2.particles - (x0 + delta)).abs().max() < 5e-4
    assert ens2.extra["previous"] is ens2.particles
    assert info.extra["pair_switches"] == 0
    assert info.spread_forecast is not None and info.spread_analysis is not None
    ens3, _info3 = f.step(ens2, None)  # forecast only
    assert torch.equal(ens3.particles, ens2.particles + delta)
    assert torch.equal(ens3.extra["previous"], ens3.particles)


def test_f2p_update_needs_the_previous_analysis():
    x1, _ = _members(0, 4, 3)
    f = EnFF(Shift(0.0), sigma_min=0.1, guidance_scale=1.0)
    with pytest.raises(ValueError, match="previous"):
        f.update(x1, None)
    with pytest.raises(ValueError, match="previous"):
        f.update(x1, None, previous=x1[:2])


# ---- OT: transport of N(0, I) to the forecast ensemble ----------------------------------


@pytest.mark.parametrize("D", [3, 10])
def test_ot_without_guidance_transports_noise_onto_forecast_members(D):
    """OT path, no guidance, σ_min = 1e-3, K = 20: the flow carries N(0, I) to the
    empirical forecast distribution ⊛ N(0, σ_min²), so every output lies within 10 σ_min
    (≈ 5 sd in D = 10) of some forecast member, while members are ≥ 0.5 apart.  Measured
    max distance ≈ 4e-3."""
    x1, _ = _members(1, 10, D)
    f = EnFF(
        Shift(0.0),
        path="ot",
        sigma_min=1e-3,
        guidance_scale=None,
        guidance="none",
        steps=20,
        generator=3,
    )
    xa, diag = f.update(x1, None)
    dist = torch.cdist(xa, x1)
    inter = torch.cdist(x1, x1) + 1e9 * torch.eye(10, dtype=torch.float64)
    assert inter.min() > 0.5
    assert dist.min(1).values.max() < 1e-2
    assert diag["pair_switches"] == 0


def test_montecarlo_guidance_lands_on_members_in_proportion_to_their_likelihood():
    """OT + Monte-Carlo guidance transports to the importance-weighted forecast ensemble
    (docs/method.md#enff).  Four distinct members repeated 200 times (N = 800, D = 5), x_0, x_1
    observed with σ_y = 1: the fraction of outputs near member j matches w_j ∝ p(y | member j)
    within 4 binomial sd (sd ≤ sqrt(0.25/800) ≈ 0.018); measured 0.94 / 0.01 / 0.03 / 0.02 against
    0.91 / 0.01 / 0.05 / 0.03.  Without guidance the fractions are ≈ 1/4."""
    members, _ = _members(2, 4, 5, scale=2.0)
    y = members[0, :2] + 0.3
    obs = Observation(y, Select([0, 1]), isotropic_noise(1.0))
    w = torch.softmax(-0.5 * ((y - members[:, :2]) ** 2).sum(1), 0)
    forecast = members.repeat(200, 1)
    for guidance, target in (("montecarlo", w), ("none", torch.full((4,), 0.25))):
        f = EnFF(
            Shift(0.0),
            path="ot",
            sigma_min=1e-3,
            guidance=guidance,
            guidance_scale=None,
            steps=20,
            generator=2,
        )
        xa, _ = f.update(forecast, obs)
        dist = torch.cdist(xa, members)
        assert dist.min(1).values.max() < 1e-2
        freq = torch.bincount(dist.argmin(1), minlength=4).double() / xa.shape[0]
        sd = torch.sqrt(target.double() * (1 - target.double()) / xa.shape[0])
        assert ((freq - target).abs() <= 4 * sd + 1e-3).all(), (guidance, freq, target)


# ---- filtering ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": "f2p", "sigma_min": 0.01, "guidance_scale": 0.1},
        {"path": "ot", "sigma_min": 0.01, "guidance_scale": 0.1, "steps": 20},
    ],
    ids=["f2p", "ot"],
)
def test_reduces_error_of_the_free_forecast_on_the_linear_gaussian_model(kwargs):
    """conftest model (D = 4, x_0 and x_2 observed, σ_y = 0.5), N = 50, 30 cycles, exact
    linear forecast: the EnFF mean's RMSE is below 0.9× the free forecast's.  λ = 0.1 gives
    γ = λ/σ_y² = 0.4 (F2P gain 1 − 0.956⁹ ≈ 0.33).  Measured: F2P 1.32, OT 1.41 vs free
    1.93 (Kalman filter 0.95)."""
    model = make_lg_model()
    K = 30
    truth = simulate_lg(model, K, seed=1)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(0.5), generator=torch.Generator().manual_seed(2)
    )
    em = ExactLinearEmulator(model.A, model.b, model.Q)
    x0 = torch.randn(50, model.D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    enff = assimilate(EnFF(em, generator=4, **kwargs), x0, obs, truth, progress=False)
    free = assimilate(Forecast(em, generator=4), x0, obs, truth, progress=False)
    e_a = float(((enff.means - truth) ** 2).mean().sqrt())
    e_f = float(((free.means - truth) ** 2).mean().sqrt())
    print(f"EnFF-{kwargs['path']} RMSE {e_a:.3f} vs free forecast {e_f:.3f}")
    assert e_a < 0.9 * e_f
    assert enff.final.is_uniform()


# ---- hyperparameters ---------------------------------------------------------------------


def test_sigma_min_and_guidance_scale_are_required():
    with pytest.raises(TypeError, match="sigma_min"):
        EnFF(Shift(0.0), guidance_scale=1.0)
    with pytest.raises(TypeError, match="guidance_scale"):
        EnFF(Shift(0.0), sigma_min=0.1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"path": "vp"}, "path"),
        ({"sigma_min": 0.0}, "sigma_min"),
        ({"sigma_min": float("nan")}, "sigma_min"),
        ({"sigma_min": 2.0, "path": "ot"}, "sigma_min"),
        ({"guidance_scale": None}, "guidance_scale"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("inf")}, "guidance_scale"),
        ({"guidance": "montecarlo"}, "guidance_scale"),
        ({"guidance": "dps"}, "guidance"),
        ({"steps": 1}, "steps"),
        ({"inflation": 0.5}, "inflation"),
        ({"mixture_chunk": -3}, "mixture_chunk"),
        ({"std": -1.0}, "std"),
    ],
)
def test_bad_hyperparameters_are_rejected_by_name(kwargs, name):
    base = {"sigma_min": 0.1, "guidance_scale": 1.0}
    base.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=name):
        EnFF(Shift(0.0), **base)


@pytest.mark.parametrize("guidance", ["local", "montecarlo"])
def test_float32_fields_nonlinear_h_missing_values_and_chunking(guidance):
    """Works on (N, 2, 3) float32 states with a nonlinear H and a missing value; the result
    does not depend on ``mixture_chunk`` beyond rounding."""
    x0, _ = _members(0, 40, 6)
    x0 = x0.float().reshape(40, 2, 3)
    y = torch.tensor([0.5, float("nan"), -0.3])
    obs = Observation(y, Lambda(lambda x: torch.arctan(x[:, 0, :])), isotropic_noise(0.1))
    scale = 0.01 if guidance == "local" else None
    out = []
    for chunk in (None, 7):
        f = EnFF(
            Shift(0.1),
            path="ot",
            sigma_min=0.01,
            guidance=guidance,
            guidance_scale=scale,
            mixture_chunk=chunk,
            generator=1,
        )
        ens, _ = f.step(f.init(x0), obs)
        assert ens.particles.dtype == torch.float32 and ens.particles.shape == x0.shape
        out.append(ens.particles)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-5)
