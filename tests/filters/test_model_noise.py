"""FA-APF with additive model noise (``Jittered``; docs/method.md#model-noise): on the
linear-Gaussian model, the jittered transition N(Ax + b, Q + q²I) is again linear-Gaussian,
so the proposal and the whole filter have a closed form to meet."""

from __future__ import annotations

import pytest
import torch
from azula.linalg.covariance import DiagonalCovariance, IsotropicCovariance
from conftest import make_lg_model
from test_fa_apf import compare_with_kalman, kalman_setup

from genfilter.emulators.jittered import Jittered
from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.filters.base import assimilate
from genfilter.filters.fa_apf import FAAPF
from genfilter.filters.kalman import KalmanFilter
from genfilter.observations import (
    Coarsen,
    Lambda,
    Observation,
    Select,
    isotropic_noise,
    noise_matrix,
)

Q_STD = 0.6


def _lg():
    m = make_lg_model()
    return LinearGaussianEmulator(m.A, m.b, m.Q, iterations=4)


def _obs():
    return Observation(
        torch.tensor([0.3, -0.5], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )


def test_jittered_proposal_is_the_optimal_proposal_of_the_jittered_model():
    """z from the emulator's guided proposal under the widened observation, then the
    Gaussian conditional by Matheron's rule: the draws match the closed-form optimal
    proposal of N(Ax + b, Q + q²I) (mean within 5 MC standard errors, covariance within 5 %);
    without the second stage (z alone) the covariance is off by far more."""
    model = make_lg_model()
    n = 20000
    em = LinearGaussianEmulator(model.A, model.b, model.Q, iterations=4)
    jit = Jittered(em, Q_STD)
    x0 = torch.randn(1, model.D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0 = x0.expand(n, -1).clone()
    obs = _obs()
    draws = jit.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
    wide = model.Q + Q_STD**2 * torch.eye(model.D, dtype=torch.float64)
    m, P = LinearGaussianEmulator(model.A, model.b, wide).exact_posterior(x0[:1], obs)
    se = torch.sqrt(torch.diagonal(P) / n)
    assert ((draws.mean(0) - m[0]).abs() <= 5 * se).all()
    scale = torch.sqrt(torch.outer(torch.diagonal(P), torch.diagonal(P)))
    assert ((torch.cov(draws.T) - P).abs() / scale).max() < 0.05
    z = em.sample_posterior(x0, jit.widen(obs), generator=torch.Generator().manual_seed(2))
    assert ((torch.cov(z.T) - P).abs() / scale).max() > 0.2


def test_fa_apf_with_model_noise_tracks_the_kalman_filter_of_the_jittered_model():
    """FA-APF (gaussian weights, N = 2000, no inflation) on Jittered(emulator, q) against
    the Kalman filter with Q + q²I: the tolerances of the noise-free Kalman test."""
    model, truth, obs, m0, P0, _ = kalman_setup()
    wide = model.Q + Q_STD**2 * torch.eye(model.D, dtype=torch.float64)
    kf = KalmanFilter(model.A, model.b, wide).filter(m0, P0, obs)
    N = 2000
    g = torch.Generator().manual_seed(3)
    x0 = (
        m0 + torch.randn(N, model.D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(P0).T
    )
    em = LinearGaussianEmulator(model.A, model.b, model.Q, steps=64, iterations=4)
    f = FAAPF(Jittered(em, Q_STD), weights="gaussian", ess_interval=None, generator=1)
    run = assimilate(f, x0, obs, truth=truth, progress=False)
    mean_err, var_err, ll_err = compare_with_kalman(run, kf)
    assert mean_err < 0.25
    assert var_err < 0.2
    assert ll_err < 1.0


def test_widened_noise_keeps_its_structure():
    """Σ_y + q² H Hᵀ: isotropic and diagonal noise stay so for a selection (H Hᵀ = I); an
    averaging operator gives the dense matrix; q = 0 changes nothing."""
    em = _lg()
    jit = Jittered(em, 0.5)
    iso = jit.widen(_obs())
    assert isinstance(iso.noise, IsotropicCovariance)
    assert float(iso.noise.lmbda) == pytest.approx(0.25 + 0.25)
    diag = Observation(
        torch.tensor([0.3, -0.5], dtype=torch.float64),
        Select([0, 2]),
        DiagonalCovariance(torch.tensor([0.1, 0.2], dtype=torch.float64)),
    )
    assert torch.allclose(jit.widen(diag).noise.D, torch.tensor([0.35, 0.45], dtype=torch.float64))
    # a 2 x 2 field coarsened by 2: one value, the mean of 4, H Hᵀ = 1/4
    jit4 = Jittered(type("E", (), {"state_shape": (2, 2)})(), 0.5)
    coarse = Observation(torch.tensor([0.0]), Coarsen(2), isotropic_noise(0.1))
    R = noise_matrix(jit4.widen(coarse).noise, 1)
    assert float(R) == pytest.approx(0.01 + 0.25 / 4)
    assert float(Jittered(em, 0.0).widen(_obs()).noise.lmbda) == pytest.approx(0.25)


def test_model_noise_needs_a_linear_operator():
    em = _lg()
    obs = Observation(
        torch.tensor([0.3], dtype=torch.float64),
        Lambda(lambda x: x[:, :1] ** 2),
        isotropic_noise(0.5),
    )
    with pytest.raises(ValueError, match="linear observation operator"):
        Jittered(em, 0.5).widen(obs)


def test_weights_see_the_observation_through_the_model_noise():
    """Per particle, gaussian weights are the exact predictive log-density
    N(y; H(Ax + b), Σ_y + H(Q + q²I)Hᵀ) and dirac weights N(y; H(Ax + b), Σ_y + q² H Hᵀ)."""
    model = make_lg_model()
    em = LinearGaussianEmulator(model.A, model.b, model.Q, iterations=4)
    x = torch.randn(6, model.D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    obs = _obs()
    H = torch.eye(model.D, dtype=torch.float64)[[0, 2]]
    R = 0.25 * torch.eye(2, dtype=torch.float64)
    q2I = Q_STD**2 * torch.eye(model.D, dtype=torch.float64)
    mean_y = (x @ model.A.T + model.b) @ H.T
    for weights, cov in (
        ("gaussian", R + H @ (model.Q + q2I) @ H.T),
        ("dirac", R + H @ q2I @ H.T),
    ):
        f = FAAPF(Jittered(em, Q_STD), weights=weights, ess_interval=None, generator=1)
        got = f.log_likelihoods(x, obs)
        want = torch.distributions.MultivariateNormal(mean_y, cov).log_prob(obs.y)
        # the emulator's predictive mean comes from its sampler (64 steps): 0.01-0.03 nats;
        # leaving out q² moves these log-densities by 0.1 to 1 nat
        assert torch.allclose(got, want, atol=0.05), (weights, (got - want).abs().max())


def test_a_config_gives_fa_apf_model_noise():
    """filter.options.jitter of fa-apf wraps the emulator; a bad value names the field."""
    from genfilter.experiments.config import ConfigError, parse_config
    from genfilter.experiments.runner import build_emulator, build_filter, build_twin_setup

    raw = {
        "name": "t",
        "setup": "l63-a",
        "emulator": "true",
        "filter": {"method": "fa-apf", "particles": 8, "options": {"jitter": 0.3}},
    }
    cfg = parse_config(raw)
    setup = build_twin_setup(cfg)
    f = build_filter(cfg, build_emulator(cfg, setup), setup, torch.Generator())
    assert isinstance(f.emulator, Jittered) and f.emulator.std == 0.3
    raw["filter"]["options"]["jitter"] = -1
    with pytest.raises(ConfigError, match="filter.options.jitter"):
        parse_config(raw)


# ----------------------------------------------------------- noise scaled to the ensemble


def _spread(scale=0.8, radius=2.0, shrink=False):
    """SpreadJittered on the linear-Gaussian model, adapted to a fixed, spread ensemble; its
    Q_k computed independently (numpy covariance, the Gaspari–Cohn polynomial on the ring)."""
    import numpy as np

    from genfilter.emulators.jittered import SpreadJittered

    model = make_lg_model()
    em = LinearGaussianEmulator(model.A, model.b, model.Q, iterations=4)
    jit = SpreadJittered(em, scale, radius, shrink=shrink)
    g = torch.Generator().manual_seed(11)
    ens = 2.0 * torch.randn(50, model.D, generator=g, dtype=torch.float64)
    mu = jit.adapt(ens).numpy()  # the kernel centres
    if shrink:  # back to the emulator's predictive means (the covariance is of those)
        mu = (mu - jit._shift.numpy()) / jit.a
    D = model.D
    i = np.arange(D)
    d = np.abs(i[:, None] - i[None, :])
    d = np.minimum(d, D - d) / radius  # periodic ring

    def gc(z):  # Gaspari & Cohn (1999), Eq. 4.10
        z = np.abs(z)
        out = np.zeros_like(z)
        a = z <= 1
        za = z[a]
        out[a] = -0.25 * za**5 + 0.5 * za**4 + 0.625 * za**3 - 5 / 3 * za**2 + 1
        b = (z > 1) & (z < 2)
        zb = z[b]
        out[b] = (
            zb**5 / 12 - 0.5 * zb**4 + 0.625 * zb**3 + 5 / 3 * zb**2 - 5 * zb + 4 - 2 / (3 * zb)
        )
        return out

    Q = scale**2 * np.cov(mu.T) * gc(d)
    w, V = np.linalg.eigh(Q)
    Q = (V * np.clip(w, 0, None)) @ V.T
    return model, em, jit, ens, torch.from_numpy(Q)


def test_spread_noise_is_the_tapered_covariance_of_the_predictive_means():
    """adapt() sets Q_k = h² (ρ ∘ Cov(μ_i)) (tapered, negative eigenvalues clipped), and
    predict_mean returns the means of the adapted particles without recomputing them."""
    from genfilter.emulators.jittered import SpreadJittered

    _, _, jit, ens, Q = _spread()
    assert torch.allclose(jit._cov, Q, rtol=1e-10, atol=1e-12)
    assert jit.predict_mean(ens) is jit._means[1]
    # on a ring of 12 with radius 2, points 4 or more apart are uncorrelated in Q_k
    ring = SpreadJittered(_ring_identity(12), 1.0, 2.0)
    ring.adapt(torch.randn(200, 12, generator=torch.Generator().manual_seed(0)))
    off = (torch.arange(12)[:, None] - torch.arange(12)[None, :]).abs()
    far = torch.minimum(off, 12 - off) >= 4
    assert float(ring._cov[far].abs().max()) < 1e-3 * float(ring._cov.diagonal().min())
    assert float(ring._cov[~far].abs().max()) > 0.5


def _kernel_model(model, jit):
    """The jittered transition as a linear-Gaussian model: N(a(Ax + b) + s, a²Q + Q_k)."""
    a = jit.a
    shift = jit._shift if jit.shrink else torch.zeros(model.D, dtype=torch.float64)
    return a * model.A, a * model.b + shift, a**2 * model.Q + jit._cov


@pytest.mark.parametrize("shrink", [False, True])
def test_spread_jittered_proposal_is_the_optimal_proposal_with_the_correlated_noise(shrink):
    """With a correlated Q_k the two-stage proposal (z under Σ_y + H Q_k Hᵀ, then Matheron
    with gain Q_k Hᵀ S⁻¹) matches the closed-form optimal proposal of N(Ax + b, Q + Q_k),
    and with shrinkage that of N(a(Ax + b) + s, a²Q + Q_k): the unobserved components move
    with the observed ones. The isotropic gain (q² Hᵀ S⁻¹) in its place puts the mean more
    than 10 Monte-Carlo standard errors off."""
    model, _, jit, _, _ = _spread(scale=0.6 if shrink else 0.8, shrink=shrink)
    n = 20000
    x0 = torch.randn(1, model.D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0 = x0.expand(n, -1).clone()
    obs = _obs()
    draws = jit.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
    m, P = LinearGaussianEmulator(*_kernel_model(model, jit)).exact_posterior(x0[:1], obs)
    se = torch.sqrt(torch.diagonal(P) / n)
    assert ((draws.mean(0) - m[0]).abs() <= 5 * se).all()
    scale = torch.sqrt(torch.outer(torch.diagonal(P), torch.diagonal(P)))
    assert ((torch.cov(draws.T) - P).abs() / scale).max() < 0.05
    # ablation: the isotropic gain with the same widened S
    jit._gain = lambda solved, H: float(torch.diagonal(jit._cov).mean()) * solved @ H
    bad = jit.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
    assert ((bad.mean(0) - m[0]).abs() / se).max() > 10


@pytest.mark.parametrize("shrink", [False, True])
def test_spread_jittered_weights_see_the_correlated_noise(shrink):
    """Gaussian weights are N(y; H(Ax + b), Σ_y + H(Q + Q_k)Hᵀ) per particle, and with
    shrinkage N(y; H(a(Ax + b) + s), Σ_y + H(a²Q + Q_k)Hᵀ); dirac weights the same means
    with Σ_y + H Q_k Hᵀ."""
    model, _, jit, _, _ = _spread(scale=0.6 if shrink else 0.8, shrink=shrink)
    x = torch.randn(6, model.D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    obs = _obs()
    H = torch.eye(model.D, dtype=torch.float64)[[0, 2]]
    R = 0.25 * torch.eye(2, dtype=torch.float64)
    A, b, Q = _kernel_model(model, jit)
    for weights, cov in (("gaussian", R + H @ Q @ H.T), ("dirac", R + H @ jit._cov @ H.T)):
        f = FAAPF(jit, weights=weights, ess_interval=None, generator=1)
        got = f.log_likelihoods(x, obs)
        want = torch.distributions.MultivariateNormal((x @ A.T + b) @ H.T, cov)
        assert torch.allclose(got, want.log_prob(obs.y), atol=0.05), weights


def test_fa_apf_adapts_the_spread_noise_at_every_step():
    """FA-APF calls adapt() on the particles it weights (Q_k follows the ensemble), is not
    shardable with it, and a filter that never adapts gets a clear error."""
    from genfilter.emulators.jittered import SpreadJittered

    model, truth, obs, m0, _, _ = kalman_setup()
    em = LinearGaussianEmulator(model.A, model.b, model.Q, steps=16, iterations=4)
    jit = SpreadJittered(em, 0.5)
    seen = []
    adapt = jit.adapt
    jit.adapt = lambda x, generator=None: (seen.append(x), adapt(x, generator=generator))[1]
    f = FAAPF(jit, generator=1)
    assert not f.shardable
    x0 = m0 + torch.randn(
        64, model.D, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    run = assimilate(f, x0, obs[:3], truth=truth[:3], progress=False)
    assert len(seen) == 3 and torch.equal(seen[0], x0)
    assert torch.isfinite(run.means).all()
    with pytest.raises(RuntimeError, match="adapt"):
        SpreadJittered(em, 0.5).sample(x0)


def test_a_config_gives_fa_apf_spread_noise():
    from genfilter.emulators.jittered import SpreadJittered
    from genfilter.experiments.config import ConfigError, parse_config
    from genfilter.experiments.runner import build_emulator, build_filter, build_twin_setup

    raw = {
        "name": "t",
        "setup": "l63-a",
        "emulator": "true",
        "filter": {
            "method": "fa-apf",
            "particles": 8,
            "options": {"jitter_scale": 0.3, "jitter_radius": 2},
        },
    }
    cfg = parse_config(raw)
    setup = build_twin_setup(cfg)
    f = build_filter(cfg, build_emulator(cfg, setup), setup, torch.Generator())
    assert isinstance(f.emulator, SpreadJittered) and f.emulator.radius == 2.0
    raw["filter"]["options"]["jitter_shrink"] = True
    cfg = parse_config(raw)
    f = build_filter(cfg, build_emulator(cfg, setup), setup, torch.Generator())
    assert f.emulator.shrink and f.emulator.a == pytest.approx((1 - 0.3**2) ** 0.5)
    raw["filter"]["options"]["jitter_shrink"] = 1
    with pytest.raises(ConfigError, match="jitter_shrink.*true or false"):
        parse_config(raw)
    raw["filter"]["options"].update(jitter_shrink=True, jitter_scale=1.2)
    cfg = parse_config(raw)
    with pytest.raises(ConfigError, match="jitter_scale.*< 1 with shrinkage"):
        build_filter(cfg, build_emulator(cfg, setup), setup, torch.Generator())
    del raw["filter"]["options"]["jitter_shrink"]
    raw["filter"]["options"]["jitter"] = 0.3
    with pytest.raises(ConfigError, match="cannot be combined"):
        parse_config(raw)
    del raw["filter"]["options"]["jitter"], raw["filter"]["options"]["jitter_scale"]
    with pytest.raises(ConfigError, match="needs filter.options.jitter_scale"):
        parse_config(raw)
    # the bandwidth raised by the innovation
    raw["filter"]["options"] = {"jitter_scale": 0.3, "jitter_adaptive": True}
    cfg = parse_config(raw)
    assert build_filter(cfg, build_emulator(cfg, setup), setup, torch.Generator()).emulator.adaptive
    raw["filter"]["options"]["jitter_shrink"] = True
    with pytest.raises(ConfigError, match="jitter_adaptive.*cannot be combined"):
        parse_config(raw)
    raw["filter"]["options"] = {"jitter_adaptive": True}
    with pytest.raises(ConfigError, match="needs filter.options.jitter_scale"):
        parse_config(raw)
    raw["filter"]["options"] = {"jitter_scale": 0.3, "jitter_adaptive": "yes"}
    with pytest.raises(ConfigError, match="jitter_adaptive.*true or false"):
        parse_config(raw)


# ------------------------------------------------------- bandwidth raised by the innovation


def _ring_identity(D=12):
    """An emulator whose predictive mean is the particle itself, on a ring of D points."""
    return type(
        "Ring", (), {"state_shape": (D,), "predict_mean": lambda self, x, generator=None: x}
    )()


def test_adaptive_bandwidth_is_the_innovation_excess_with_the_scale_as_floor():
    """h_k² = max(h², (dᵀd − tr Σ_y) / tr(H P Hᵀ) − 1 − 2 √(2 tr S²) / tr(H P Hᵀ)),
    d = y − H μ̄, S = (1 + h²) H P Hᵀ + Σ_y, against numpy; Q_k is h_k² times the tapered
    covariance; without the observation, or with an innovation the spread explains, h_k = h."""
    import numpy as np

    from genfilter.emulators.jittered import SpreadJittered

    g = torch.Generator().manual_seed(4)
    ens = 0.5 * torch.randn(40, 12, generator=g, dtype=torch.float64) + 1.0
    H = Select(list(range(0, 12, 2)))
    mean = ens.mean(0).numpy()
    P = np.cov(ens.numpy().T)
    trHPH = float(np.trace(P[::2, ::2]))
    plain = SpreadJittered(_ring_identity(), 0.4, 4.0)
    plain.adapt(ens)
    for y, expect_floor in ((mean[::2] + 0.01, True), (mean[::2] + 3.0, False)):
        obs = Observation(torch.from_numpy(y.copy()), H, isotropic_noise(0.7))
        jit = SpreadJittered(_ring_identity(), 0.4, 4.0, adaptive=True)
        jit.adapt(ens, obs=obs)
        d = y - mean[::2]
        S = (1 + 0.4**2) * P[::2, ::2] + 0.7**2 * np.eye(6)
        sd = np.sqrt(2 * np.trace(S @ S)) / trHPH
        h2 = max(0.4**2, (d @ d - 6 * 0.7**2) / trHPH - 1 - 2 * sd)
        assert jit.last_scale == pytest.approx(h2**0.5, rel=1e-6)  # Σ_y in float32
        assert (jit.last_scale == 0.4) is expect_floor
        # the same taper and covariance, scaled by (h_k / h)²
        assert torch.allclose(jit._cov, plain._cov * h2 / 0.4**2, rtol=1e-5, atol=1e-12)
        assert jit.last_scale > 2.0 or expect_floor
    jit.adapt(ens)  # no observation: the floor
    assert jit.last_scale == 0.4
    with pytest.raises(ValueError, match="cannot be combined"):
        SpreadJittered(_ring_identity(), 0.4, shrink=True, adaptive=True)


def test_adaptive_bandwidth_recovers_the_spread_deficit_on_average():
    """When the truth is drawn from N(μ̄, (1 + c²) P) and observed with noise Σ_y, the
    innovation excess (dᵀd − tr Σ_y)/tr(H P Hᵀ) − 1 that the bandwidth is read from averages
    c² (a bound of four standard errors over 2 000 fixed-seed replicates), and h_k² is it
    less twice its standard deviation, floored at h²."""
    from genfilter.emulators.jittered import SpreadJittered

    c2 = 1.5
    g = torch.Generator().manual_seed(9)
    ens = torch.randn(200, 12, generator=g, dtype=torch.float64) @ torch.diag(
        torch.linspace(0.5, 1.5, 12, dtype=torch.float64)
    )
    mean, A = ens.mean(0), ens - ens.mean(0)
    P = A.T @ A / (ens.shape[0] - 1)
    L = torch.linalg.cholesky((1 + c2) * P)
    H = Select(list(range(0, 12, 2)))
    jit = SpreadJittered(_ring_identity(), 0.01, adaptive=True)
    trHPH = float(P.diagonal()[::2].sum())
    noise = isotropic_noise(0.7)
    raw, used = [], []
    for _ in range(2000):
        x = mean + L @ torch.randn(12, generator=g, dtype=torch.float64)
        y = x[::2] + 0.7 * torch.randn(6, generator=g, dtype=torch.float64)
        jit.adapt(ens, obs=Observation(y, H, noise))
        d = y - mean[::2]
        raw.append((float(d @ d) - float(noise_matrix(noise, 6).trace())) / trHPH - 1)
        used.append(jit.last_scale**2)
    raw = torch.tensor(raw, dtype=torch.float64)
    S = (1 + 1e-4) * P[::2, ::2] + 0.49 * torch.eye(6, dtype=torch.float64)
    sd = float((2 * (S @ S).trace()).sqrt()) / trHPH
    assert sd > 0.1  # the discount is not negligible here
    expected = (raw - 2 * sd).clamp_min(1e-4)
    assert torch.allclose(torch.tensor(used, dtype=torch.float64), expected, rtol=1e-6)
    se = float(raw.std() / len(raw) ** 0.5)
    assert abs(float(raw.mean()) - c2) < 4 * se


def test_fa_apf_gives_the_observation_to_the_adaptive_noise_and_records_its_bandwidth():
    """FA-APF calls adapt() with the step's observation: the bandwidth in the step's
    diagnostics is the innovation formula's for the particles it was given."""
    from genfilter.emulators.jittered import SpreadJittered

    _, em, _, ens, _ = _spread()
    jit = SpreadJittered(em, 0.3, 2.0, adaptive=True)
    f = FAAPF(jit, generator=3, localization=2.0)
    obs = Observation(
        torch.tensor([5.0, -5.0], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )
    _, info = f.step(f.init(ens), obs)
    mu = jit._means[1].reshape(ens.shape[0], -1)  # the means adapt() drew for these particles
    assert torch.equal(jit._means[0], ens)
    mean, A = mu.mean(0), mu - mu.mean(0)
    P = A.T @ A / (ens.shape[0] - 1)
    d = obs.y - mean[[0, 2]]
    HPH = P[[0, 2]][:, [0, 2]]
    S = (1 + 0.09) * HPH + 0.25 * torch.eye(2, dtype=torch.float64)
    sd = float((2 * (S @ S).trace()).sqrt() / HPH.trace())
    h2 = max(0.09, (float(d @ d) - 2 * 0.25) / float(HPH.trace()) - 1 - 2 * sd)
    assert info.extra["jitter_scale"] == pytest.approx(h2**0.5, rel=1e-9)
    assert info.extra["jitter_scale"] > 0.3
