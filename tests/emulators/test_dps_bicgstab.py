"""DPS guidance and the BiCGStab solve of MMPS, checked against closed forms on the exact
linear-Gaussian denoiser (docs/method.md#dps-guidance, docs/method.md#optimal-proposal;
emulators/guidance.py).

* BiCGStab (batched, fixed iteration count) solves SPD and non-symmetric systems, and its
  breakdown guard keeps the iterate finite.
* MMPS with ``solver="bicgstab"`` equals the dense Gaussian update call by call and samples the
  exact optimal proposal.
* DPS equals its closed form call by call.  With ``dps_scale="likelihood"`` the guided
  probability-flow ODE of the linear model is linear, so the law DPS samples is Gaussian with
  moments given by a matrix ODE: the samples match that law, and that law is *not* the
  posterior (DPS is biased: over-confident, pulled onto the observation).  With Chung et al.'s
  step-size rule, ``dps_scale -> 0`` gives back the unguided sampler, and a large
  ``dps_scale`` pins the observed components onto ``y``.
"""

from __future__ import annotations

import math

import pytest
import torch
from azula.guidance import MMPSDenoiser
from azula.noise import VPSchedule
from conftest import make_lg_model

from genfilter.emulators.counting import PassCountingDenoiser
from genfilter.emulators.guidance import (
    DPSDenoiser,
    KrylovMMPSDenoiser,
    bicgstab,
)
from genfilter.emulators.linear_gaussian import (
    ConditionalGaussianDenoiser,
    LinearGaussianEmulator,
)
from genfilter.observations import Observation, Select, full_noise, isotropic_noise

F64 = torch.float64
N_MC = 20000


def _rowmv(M):
    """``v -> M v`` row by row for a batch of matrices ``M (N, D, D)``."""
    return lambda v: (M @ v.unsqueeze(-1)).squeeze(-1)


def _obs():
    return Observation(torch.tensor([0.3, -0.5], dtype=F64), Select([0, 2]), isotropic_noise(0.5))


def _x0(D, n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, D, generator=g, dtype=F64).expand(n, -1).clone()


# ---------------------------------------------------------------------------- BiCGStab
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bicgstab_solves_spd_and_nonsymmetric_systems_within_d_iterations(seed):
    """16 independent systems at once, D = 8, float64: a random SPD matrix (eigenvalues
    1..10) and a random non-symmetric one (2 I + noise, condition number about 2) are solved
    to a relative error of 1e-10 within D iterations, and further iterations keep it."""
    D, N = 8, 16
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(N, D, D, generator=g, dtype=F64))[0]
    spd = (U * torch.linspace(1.0, 10.0, D, dtype=F64)) @ U.transpose(1, 2)
    nonsym = (
        2 * torch.eye(D, dtype=F64) + 0.5 * torch.randn(N, D, D, generator=g, dtype=F64) / D**0.5
    )
    assert (nonsym - nonsym.transpose(1, 2)).abs().max() > 0.1
    b = torch.randn(N, D, generator=g, dtype=F64)
    for M in (spd, nonsym):
        exact = torch.linalg.solve(M, b)
        for k in (D, 3 * D):
            x = bicgstab(_rowmv(M), b, iterations=k)
            err = (x - exact).norm(dim=-1) / exact.norm(dim=-1)
            assert err.max() < 1e-10, (k, float(err.max()))
        # and it is a real iteration: one step is far from converged
        x1 = bicgstab(_rowmv(M), b, iterations=1)
        assert ((x1 - exact).norm(dim=-1) / exact.norm(dim=-1)).max() > 1e-3


def test_bicgstab_breakdown_guard_keeps_the_iterate_finite():
    """Rows that break down — <r̂, A p> = 0 (a swap matrix with b = e1), A = 0, b = 0 —
    stop updating and stay finite (here at x0 = 0), while the healthy row of the same batch
    is solved; without the guard the first two rows divide by zero."""
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    good = torch.tensor([[3.0, 1.0], [0.5, 2.0]], dtype=F64)
    M = torch.stack([swap, torch.zeros(2, 2, dtype=F64), good, good])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, -2.0]], dtype=F64)
    for k in (1, 2, 5):
        x = bicgstab(_rowmv(M), b, iterations=k)
        assert torch.isfinite(x).all()
        assert torch.equal(x[:3], torch.zeros(3, 2, dtype=F64))
    assert torch.allclose(x[3], torch.linalg.solve(good, b[3]), atol=1e-12)
    # float32 in, float32 out (the work is in float64)
    x32 = bicgstab(_rowmv(M.float()), b.float(), iterations=2)
    assert x32.dtype == torch.float32 and torch.isfinite(x32).all()


# ---------------------------------------------------------------------------- exact denoiser
def _gaussian(D=4, schedule=None, seed=0):
    """The exact denoiser of u | c ~ N(F c + g, P) and its closed-form pieces."""
    g = torch.Generator().manual_seed(seed)
    F = 0.5 * torch.randn(D, D, generator=g, dtype=F64)
    gv = 0.1 * torch.randn(D, generator=g, dtype=F64)
    L = 0.5 * torch.randn(D, D, generator=g, dtype=F64)
    P = L @ L.T + 0.2 * torch.eye(D, dtype=F64)
    den = ConditionalGaussianDenoiser(F, gv, P, schedule or VPSchedule())
    return den, F, gv, P


def _closed_form(den, F, gv, P, x_t, t, cond):
    """x̂, J = ∂x̂/∂x_t (symmetric) and γ = σ²/α of the exact denoiser."""
    alpha, sigma = den.schedule(t)
    I = torch.eye(P.shape[0], dtype=F64)
    J = alpha * P @ torch.linalg.inv(alpha**2 * P + sigma**2 * I)
    mu = cond @ F.T + gv
    x_hat = mu + (x_t - alpha * mu) @ J.T
    return x_hat, J, sigma**2 / alpha


def _problem(seed=1):
    """A dense H (M = 3) with a full noise covariance, a batch of x_t and conditions."""
    g = torch.Generator().manual_seed(seed)
    H = torch.randn(3, 4, generator=g, dtype=F64)
    Lr = 0.3 * torch.randn(3, 3, generator=g, dtype=F64)
    R = Lr @ Lr.T + 0.1 * torch.eye(3, dtype=F64)
    y = torch.randn(3, generator=g, dtype=F64)
    x_t = torch.randn(5, 4, generator=g, dtype=F64)
    cond = torch.randn(5, 4, generator=g, dtype=F64)
    return H, R, y, x_t, cond


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_krylov_mmps_bicgstab_equals_the_dense_gaussian_update(t):
    """On the exact denoiser (VP schedule, α_t ≠ 1) MMPS with BiCGStab, M = 3 iterations,
    equals x̂ + C Hᵀ (R + H C Hᵀ)⁻¹ (y − H x̂), C = (σ²/α) J, to 1e-10; the GMRES and CG
    variants of the same class equal azula's MMPSDenoiser exactly."""
    den, F, gv, P = _gaussian()
    H, R, y, x_t, cond = _problem()
    tt = torch.tensor(t, dtype=F64)
    x_hat, J, gamma = _closed_form(den, F, gv, P, x_t, tt, cond)
    C = gamma * J
    S = R + H @ C @ H.T
    expected = x_hat + (y - x_hat @ H.T) @ torch.linalg.inv(S).T @ H @ C.T

    def A(x):
        return x @ H.T

    noise = full_noise(R)
    got = KrylovMMPSDenoiser(den, y, A, noise, solver="bicgstab", iterations=3)(x_t, tt, cond=cond)
    assert torch.allclose(got.mean, expected, rtol=0, atol=1e-10)
    for solver in ("gmres", "cg"):
        ours = KrylovMMPSDenoiser(den, y, A, noise, solver=solver, iterations=2)
        theirs = MMPSDenoiser(den, y, A, noise, solver=solver, iterations=2)
        assert torch.equal(ours(x_t, tt, cond=cond).mean, theirs(x_t, tt, cond=cond).mean)


@pytest.mark.parametrize("scale", ["likelihood", 0.7])
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_dps_denoiser_equals_its_closed_form(scale, t):
    """DPS at x_t: x̂ + (σ²/α) ζ_t Jᵀ Hᵀ R⁻¹ (y − H x̂), with ζ_t = 1 ("likelihood") or
    ζ'/‖y − H x̂‖_R (Chung et al.'s rule), computed from the known linear denoiser matrix
    (VP schedule, so the σ²/α factor is tested with α ≠ 1)."""
    den, F, gv, P = _gaussian()
    H, R, y, x_t, cond = _problem()
    tt = torch.tensor(t, dtype=F64)
    x_hat, J, gamma = _closed_form(den, F, gv, P, x_t, tt, cond)
    r = y - x_hat @ H.T
    Ri_r = r @ torch.linalg.inv(R).T
    zeta = 1.0 if scale == "likelihood" else scale / torch.sqrt((r * Ri_r).sum(-1, keepdim=True))
    expected = x_hat + gamma * zeta * (Ri_r @ H @ J)  # Jᵀ Hᵀ R⁻¹ r, row by row
    got = DPSDenoiser(den, y, lambda x: x @ H.T, full_noise(R), scale=scale)(x_t, tt, cond=cond)
    assert torch.allclose(got.mean, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(got.mean, x_hat, atol=1e-3)  # the guidance does something


@pytest.mark.parametrize(
    "make, backward",
    [
        (lambda d, y, A, n: DPSDenoiser(d, y, A, n, scale="likelihood"), 1),
        (lambda d, y, A, n: DPSDenoiser(d, y, A, n, scale=0.5), 1),
        (lambda d, y, A, n: KrylovMMPSDenoiser(d, y, A, n, "bicgstab", 2), 5),
        (lambda d, y, A, n: KrylovMMPSDenoiser(d, y, A, n, "bicgstab", 3), 7),
        (lambda d, y, A, n: KrylovMMPSDenoiser(d, y, A, n, "gmres", 1), 2),
        (lambda d, y, A, n: KrylovMMPSDenoiser(d, y, A, n, "cg", 3), 4),
    ],
)
def test_network_passes_per_call(make, backward):
    """The cost quoted in docs/core.md: one forward pass per call, and one backward pass for
    DPS, 1 + k for GMRES / CG with k iterations, 1 + 2k for BiCGStab (batched over particles)."""
    base, *_ = _gaussian()
    den = PassCountingDenoiser(base)
    H, R, y, x_t, cond = _problem()
    guided = make(den, y, lambda x: x @ H.T, full_noise(R))
    guided(x_t, torch.tensor(0.5, dtype=F64), cond=cond)
    assert (den.forwards, den.backwards) == (1, backward)


# ---------------------------------------------------------------------------- sampling
def test_mmps_bicgstab_samples_the_exact_optimal_proposal():
    """sample_posterior with the raw Tweedie covariance and BiCGStab (default: 2 iterations,
    as in the GenCast FA-APF code; M = 2 here) matches the closed-form optimal proposal
    p(x^{k+1} | x^k, y): mean within 5 MC standard errors, covariance within 5 % (xeab 64
    steps, N = 20000), as the GMRES test of test_linear_gaussian.py."""
    m = make_lg_model()
    em = LinearGaussianEmulator(
        m.A, m.b, m.Q, mean=0.5, std=2.0, covariance="tweedie", solver="bicgstab"
    )
    assert em.iterations == 2 and em.guidance_covariance == "tweedie"
    x0, obs = _x0(m.D, N_MC), _obs()
    xp = em.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
    mean, P = em.exact_posterior(x0[:1], obs)
    se = torch.sqrt(torch.diagonal(P) / N_MC)
    assert ((xp.mean(0) - mean[0]).abs() <= 5 * se).all()
    scale = torch.sqrt(torch.outer(torch.diagonal(P), torch.diagonal(P)))
    assert ((torch.cov(xp.T) - P).abs() / scale).max() < 0.05


def _dps_ode_law(em, x_prev, obs, n=1000):
    r"""Mean and covariance of what ``guidance="dps"``, ``dps_scale="likelihood"`` samples
    with an exact probability-flow ODE solver, for a LinearGaussianEmulator with mean 0, std 1
    (target = state) and its VE schedule (α = 1): the guided denoiser
    D(x) = x̂ + σ² J Hᵀ R⁻¹ (y − H x̂) is affine, D(x) = B x + a, so the ODE
    dx/d log σ = x − D(x) is linear and carries N(0, (1 + σ_max²) I) to a Gaussian whose
    moments solve dm/dℓ = (I − B) m − a, dΣ/dℓ = (I − B) Σ + Σ (I − B)ᵀ (RK4 in ℓ = log σ)."""
    P, D = em.Q, em.Q.shape[0]
    mu = em.transition_mean(x_prev)[0]
    H = obs.operator(torch.eye(D, dtype=F64)).T
    Ri = torch.linalg.inv(0.25 * torch.eye(H.shape[0], dtype=F64))
    I = torch.eye(D, dtype=F64)

    def f(ell, m, S):
        s2 = math.exp(2 * ell)
        J = P @ torch.linalg.inv(P + s2 * I)
        B = J - s2 * J @ H.T @ Ri @ H @ J
        a = (I - J) @ mu + s2 * J @ H.T @ Ri @ (obs.y - H @ (I - J) @ mu)
        K = I - B
        return K @ m - a, K @ S + S @ K.T

    _, s_max = em.schedule(torch.ones((), dtype=F64))
    _, s_min = em.schedule(torch.zeros((), dtype=F64))
    ell, h = math.log(float(s_max)), (math.log(float(s_min)) - math.log(float(s_max))) / n
    m, S = torch.zeros(D, dtype=F64), (1 + float(s_max) ** 2) * I
    for _ in range(n):
        k1 = f(ell, m, S)
        k2 = f(ell + h / 2, m + h / 2 * k1[0], S + h / 2 * k1[1])
        k3 = f(ell + h / 2, m + h / 2 * k2[0], S + h / 2 * k2[1])
        k4 = f(ell + h, m + h * k3[0], S + h * k3[1])
        m = m + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        S = S + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        ell += h
    return m, S


def test_dps_likelihood_samples_its_own_gaussian_law_which_is_not_the_posterior():
    """DPS with ζ_t = 1 on the linear model samples the Gaussian law of its guided ODE
    (mean within 5 MC standard errors, covariance within 5 %), and that law is biased with
    respect to the exact optimal proposal, in the direction the missing Tweedie covariance
    predicts: it trusts y too much — smaller variances in the observed components (here
    0.085 vs 0.145 in x1, 0.021 vs 0.201 in x3) and a mean that fits y more closely than
    the posterior mean does."""
    m = make_lg_model()
    em = LinearGaussianEmulator(m.A, m.b, m.Q, guidance="dps", dps_scale="likelihood")
    x0, obs = _x0(m.D, N_MC), _obs()
    xp = em.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
    law_mean, law_cov = _dps_ode_law(em, x0[:1], obs)
    se = torch.sqrt(torch.diagonal(law_cov) / N_MC)
    assert ((xp.mean(0) - law_mean).abs() <= 5 * se).all()
    scale = torch.sqrt(torch.outer(torch.diagonal(law_cov), torch.diagonal(law_cov)))
    assert ((torch.cov(xp.T) - law_cov).abs() / scale).max() < 0.05

    post_mean, post_cov = em.exact_posterior(x0[:1], obs)
    observed = [0, 2]
    ratio = torch.diagonal(law_cov)[observed] / torch.diagonal(post_cov)[observed]
    assert (ratio < 0.7).all(), ratio
    misfit_dps = (law_mean[observed] - obs.y).norm() / 0.5
    misfit_post = (post_mean[0, observed] - obs.y).norm() / 0.5
    prior = em.transition_mean(x0[:1])[0]
    misfit_prior = (prior[observed] - obs.y).norm() / 0.5
    assert misfit_dps < 0.6 * misfit_post < misfit_prior
    # the bias is far beyond Monte-Carlo error: the samples reject the exact posterior
    assert (
        torch.diagonal(torch.cov(xp.T))[observed] < 0.7 * torch.diagonal(post_cov)[observed]
    ).all()


def test_dps_step_size_rule_limits():
    """Chung et al.'s rule ζ_t = ζ'/‖y − H x̂‖: ζ' → 0 gives back the unguided sampler
    (deterministic xeab, same generator: the change is O(ζ')), the fit to y improves as ζ'
    grows, and a large ζ' pins the observed components onto y (the normalised step does not
    shrink with the residual), which the posterior does not do."""
    m = make_lg_model()
    x0, obs = _x0(m.D, 2000), _obs()
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    prior = LinearGaussianEmulator(m.A, m.b, m.Q).sample(x0, generator=gen())
    misfits = []
    for z in (1e-6, 0.1, 1.0, 10.0):
        em = LinearGaussianEmulator(m.A, m.b, m.Q, guidance="dps", dps_scale=z)
        xp = em.sample_posterior(x0, obs, generator=gen())
        if z == 1e-6:
            assert (xp - prior).abs().max() < 1e-4
        misfits.append(float((xp.mean(0)[[0, 2]] - obs.y).norm() / 0.5))
    assert misfits[0] > misfits[1] > misfits[2] > misfits[3]
    assert (xp[:, [0, 2]] - obs.y).abs().max() < 0.05  # ζ' = 10: on the observation
    _, P = em.exact_posterior(x0[:1], obs)
    assert (torch.diagonal(P)[[0, 2]] > 0.1).all()  # ... which the posterior is not


@pytest.mark.parametrize("options", [{"guidance": "dps"}, {"solver": "bicgstab"}])
def test_chunking_does_not_change_dps_or_bicgstab(options):
    """chunk_size = 1, 7 and N give bit-identical results (row-wise arithmetic)."""
    m = make_lg_model()
    x = torch.randn(23, m.D, generator=torch.Generator().manual_seed(9), dtype=F64)
    outs = []
    for chunk in (1, 7, None):
        em = LinearGaussianEmulator(
            m.A,
            m.b,
            m.Q,
            sampler="ddim",
            steps=6,
            covariance="tweedie",
            chunk_size=chunk,
            **options,
        )
        outs.append(em.sample_posterior(x, _obs(), generator=torch.Generator().manual_seed(11)))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


# ---------------------------------------------------------------------------- options
def test_default_guidance_is_mmps_with_gmres_one_iteration():
    """Defaults: MMPS with GMRES, 1 iteration (unchanged); 2 for BiCGStab; DPS with ζ' = 1."""
    m = make_lg_model()
    em = LinearGaussianEmulator(m.A, m.b, m.Q)
    assert (em.guidance, em.solver, em.iterations, em.dps_scale) == ("mmps", "gmres", 1, 1.0)
    assert LinearGaussianEmulator(m.A, m.b, m.Q, solver="cg").iterations == 1
    assert LinearGaussianEmulator(m.A, m.b, m.Q, solver="bicgstab", iterations=5).iterations == 5
    assert LinearGaussianEmulator(m.A, m.b, m.Q, guidance="dps", dps_scale=2).dps_scale == 2.0


@pytest.mark.parametrize(
    "options, field",
    [
        ({"guidance": "DPS"}, "guidance"),
        ({"guidance": "tmpd"}, "guidance"),
        ({"solver": "minres"}, "solver"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"iterations": True}, "iterations"),
        ({"dps_scale": 0.0}, "dps_scale"),
        ({"dps_scale": -1.0}, "dps_scale"),
        ({"dps_scale": float("nan")}, "dps_scale"),
        ({"dps_scale": float("inf")}, "dps_scale"),
        ({"dps_scale": "chung"}, "dps_scale"),
        ({"dps_scale": True}, "dps_scale"),
        ({"dps_scale": None}, "dps_scale"),
    ],
)
def test_invalid_options_raise_one_line_errors_naming_the_field(options, field):
    m = make_lg_model()
    with pytest.raises(ValueError) as info:
        LinearGaussianEmulator(m.A, m.b, m.Q, **options)
    msg = str(info.value)
    assert msg.startswith(f"{field} ") and "\n" not in msg, msg


def test_guided_denoisers_validate_their_arguments():
    den, *_ = _gaussian()
    y, noise = torch.zeros(2, dtype=F64), isotropic_noise(1.0)
    with pytest.raises(ValueError, match="^solver "):
        KrylovMMPSDenoiser(den, y, lambda x: x[:, :2], noise, solver="minres")
    with pytest.raises(ValueError, match="^iterations "):
        KrylovMMPSDenoiser(den, y, lambda x: x[:, :2], noise, iterations=0)
    with pytest.raises(ValueError, match="^dps_scale "):
        DPSDenoiser(den, y, lambda x: x[:, :2], noise, scale=-0.5)


def test_config_emulator_options_reach_the_emulator():
    """``emulator_options`` of a config pass guidance, dps_scale and solver to the emulator
    (shipped Lorenz-63 checkpoint); a bad value names its field."""
    from genfilter.experiments.config import ConfigError, parse_config
    from genfilter.experiments.runner import build_emulator, build_twin_setup

    def build(options):
        cfg = parse_config(
            {
                "setup": "l63-a",
                "emulator_options": options,
                "filter": {"method": "fa-apf", "particles": 8},
                "steps": 3,
                "burn_in": 0,
            }
        )
        return build_emulator(cfg, build_twin_setup(cfg))

    em = build({"guidance": "dps", "dps_scale": 0.5})
    assert (em.guidance, em.dps_scale) == ("dps", 0.5)
    assert build({"guidance": "dps", "dps_scale": "likelihood"}).dps_scale == "likelihood"
    em = build({"solver": "bicgstab", "covariance": "tweedie"})
    assert (em.solver, em.iterations) == ("bicgstab", 2)
    for options, field in (
        ({"guidance": "dpss"}, "guidance"),
        ({"dps_scale": -1}, "dps_scale"),
        ({"dps_scale": "chung"}, "dps_scale"),
        ({"dps_scale": [1.0]}, "dps_scale"),
        ({"iterations": 2.5}, "iterations"),
        ({"solver": "minres"}, "solver"),
    ):
        with pytest.raises(ConfigError, match=f"emulator_options.{field}"):
            build(options)
