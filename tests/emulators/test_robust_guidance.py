"""Matrix-free robust MMPS guidance: the Tweedie covariance projected in observation space
(docs/method.md#observation-space-projection; emulators/guidance.py ObservedMMPSDenoiser).

* On the exact Gaussian denoiser (symmetric PSD Jacobian) the guided denoiser equals the
  closed-form Gaussian posterior mean E[u | u_t, y], with the whole observation space and with
  a Krylov subspace of full dimension; a smaller subspace is exactly k CG iterations; the
  guided sampler draws the exact optimal proposal, and for D > 64 ``covariance="auto"`` picks
  it and it equals the dense projected guidance particle by particle.
* With a non-PSD, non-symmetric perturbation of the denoiser's Jacobian (a negative observed
  direction) the result equals the posterior with the observed covariance whose non-positive
  eigen-directions are dropped, computed independently here; it stays bounded where the raw
  Krylov solve explodes, and the one-dimensional Krylov solve makes no update along a
  direction of negative curvature.
"""

from __future__ import annotations

import pytest
import torch
from azula.denoise import Denoiser, DiracPosterior
from azula.linalg.covariance import IsotropicCovariance
from azula.noise import VESchedule
from conftest import make_lg_model

from genfilter.emulators.counting import PassCountingDenoiser
from genfilter.emulators.guidance import (
    KrylovMMPSDenoiser,
    ObservedMMPSDenoiser,
    ProjectedMMPSDenoiser,
    observed_filter,
)
from genfilter.emulators.linear_gaussian import (
    ConditionalGaussianDenoiser,
    LinearGaussianEmulator,
)
from genfilter.observations import Observation, Select, full_noise, isotropic_noise

F64 = torch.float64


def _gaussian(D: int, seed: int = 0):
    """An exact conditional Gaussian denoiser ``u | c ~ N(F c + g, P)`` (VE schedule)."""
    g = torch.Generator().manual_seed(seed)
    F = 0.5 * torch.randn(D, D, generator=g, dtype=F64)
    gv = 0.3 * torch.randn(D, generator=g, dtype=F64)
    L = torch.randn(D, D, generator=g, dtype=F64) / D**0.5
    P = L @ L.T + 0.1 * torch.eye(D, dtype=F64)
    return ConditionalGaussianDenoiser(F, gv, P, VESchedule(1e-3, 1e2)), F, gv, P


def _problem(D: int, obs_idx, n: int = 5, seed: int = 1, full_R: bool = True):
    g = torch.Generator().manual_seed(seed)
    M = len(obs_idx)
    H = torch.eye(D, dtype=F64)[list(obs_idx)]
    if full_R:
        K = 0.3 * torch.randn(M, M, generator=g, dtype=F64)
        R = K @ K.T + 0.2 * torch.eye(M, dtype=F64)
    else:
        R = 0.3 * torch.eye(M, dtype=F64)
    y = torch.randn(M, generator=g, dtype=F64)
    x_t = 2.0 * torch.randn(n, D, generator=g, dtype=F64)
    cond = torch.randn(n, D, generator=g, dtype=F64)
    return H, R, y, x_t, cond


def _sigma(t: float) -> float:
    return float(VESchedule(1e-3, 1e2)(torch.tensor(t, dtype=F64))[1])


def _closed_form(F, gv, P, H, R, y, x_t, cond, sigma):
    """E[u | u_t, y] by Gaussian conditioning: u ~ N(F c + g, P), u_t = u + σ z, y = H u + e
    (VE schedule, α = 1)."""
    D = P.shape[0]
    mu = cond @ F.T + gv
    prec = torch.linalg.inv(P) + torch.eye(D, dtype=F64) / sigma**2 + H.T @ torch.linalg.solve(R, H)
    rhs = mu @ torch.linalg.inv(P).T + x_t / sigma**2 + (H.T @ torch.linalg.solve(R, y))[None]
    return torch.linalg.solve(prec, rhs.T).T


# ---------------------------------------------------------------------------- exact Gaussian
@pytest.mark.parametrize("t", [0.2, 0.6, 0.95])
@pytest.mark.parametrize("full_R", [True, False])
def test_observed_guidance_is_the_exact_gaussian_posterior(t, full_R):
    """The exact denoiser's Jacobian is symmetric PSD: the observation-space guidance (whole
    space, and a Krylov space of dimension M) is exact MMPS, i.e. the Gaussian posterior mean
    of u given u_t and y, at low and high noise, with a full or an isotropic Σ_y."""
    D, idx = 5, (0, 2, 3)
    den, F, gv, P = _gaussian(D)
    H, R, y, x_t, cond = _problem(D, idx, full_R=full_R)
    cov_y = R if full_R else isotropic_noise(float(R[0, 0]) ** 0.5)
    expected = _closed_form(F, gv, P, H, R, y, x_t, cond, _sigma(t))
    tt = torch.tensor(t, dtype=F64)
    for rank in (None, 3, 10):
        guided = ObservedMMPSDenoiser(den, y, lambda u: u @ H.T, cov_y, rank=rank)
        got = guided(x_t, tt, cond=cond).mean
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9), rank
    # the guidance moved the mean by far more than the tolerance (σ_t = 0.01 at t = 0.2)
    unguided = den(x_t, tt, cond=cond).mean
    assert (unguided - expected).abs().max() > 1e-4


@pytest.mark.parametrize("k", [1, 2, 3])
def test_krylov_observed_guidance_is_k_cg_iterations_on_a_psd_covariance(k):
    """With an isotropic Σ_y and a symmetric PSD covariance the Rayleigh–Ritz solve on the
    k-dimensional Krylov space is the k-th CG iterate (Galerkin condition): it equals
    KrylovMMPSDenoiser with ``solver="cg"`` and k iterations, and differs from the exact
    solve for k < M."""
    D, idx = 6, (0, 1, 3, 5)
    den, F, gv, P = _gaussian(D, seed=2)
    H, R, y, x_t, cond = _problem(D, idx, seed=3, full_R=False)
    noise = isotropic_noise(float(R[0, 0]) ** 0.5)
    tt = torch.tensor(0.7, dtype=F64)
    ours = ObservedMMPSDenoiser(den, y, lambda u: u @ H.T, noise, rank=k)(x_t, tt, cond=cond)
    cg = KrylovMMPSDenoiser(den, y, lambda u: u @ H.T, noise, "cg", k)(x_t, tt, cond=cond)
    assert torch.allclose(ours.mean, cg.mean, rtol=1e-8, atol=1e-9)
    exact = _closed_form(F, gv, P, H, R, y, x_t, cond, _sigma(0.7))
    assert (ours.mean - exact).abs().max() > 1e-6


def test_observed_guidance_samples_the_exact_optimal_proposal():
    """sample_posterior with ``covariance="observed"`` (M = 2, normalisation on) matches the
    closed-form optimal proposal: mean within 5 MC standard errors, covariance within 5 %
    (xeab 64 steps, N = 20000), as the GMRES and BiCGStab tests."""
    m = make_lg_model()
    em = LinearGaussianEmulator(m.A, m.b, m.Q, mean=0.5, std=2.0, covariance="observed")
    assert em.guidance_covariance == "observed" and em.observed_krylov_rank(2) is None
    n = 20000
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, m.D, generator=g, dtype=F64).expand(n, -1).clone()
    obs = Observation(torch.tensor([0.3, -0.5], dtype=F64), Select([0, 2]), isotropic_noise(0.5))
    xp = em.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
    mean, P = em.exact_posterior(x0[:1], obs)
    se = torch.sqrt(torch.diagonal(P) / n)
    assert ((xp.mean(0) - mean[0]).abs() <= 5 * se).all()
    scale = torch.sqrt(torch.outer(torch.diagonal(P), torch.diagonal(P)))
    assert ((torch.cov(xp.T) - P).abs() / scale).max() < 0.05


def test_auto_picks_observed_for_large_states_and_it_equals_the_dense_projection():
    """D = 80 > 64: ``covariance="auto"`` is the observation-space guidance (M + 1 = 4
    backward passes per step instead of 80); on the exact denoiser it equals the dense
    projected guidance particle by particle (both are exact MMPS)."""
    D = 80
    g = torch.Generator().manual_seed(0)
    A = 0.9 * torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))[0]
    b = 0.1 * torch.randn(D, generator=g, dtype=F64)
    L = torch.randn(D, D, generator=g, dtype=F64) / D**0.5
    Q = 0.3 * (L @ L.T) + 0.2 * torch.eye(D, dtype=F64)
    kw = dict(steps=12, mean=0.3, std=1.5)
    auto = LinearGaussianEmulator(A, b, Q, **kw)
    dense = LinearGaussianEmulator(A, b, Q, covariance="projected", **kw)
    assert auto.guidance_covariance == "observed" and dense.guidance_covariance == "projected"
    obs = Observation(
        torch.tensor([0.4, -0.2, 1.0], dtype=F64),
        Select([3, 40, 77]),
        full_noise(
            torch.tensor([[0.3, 0.05, 0.0], [0.05, 0.2, 0.02], [0.0, 0.02, 0.4]], dtype=F64)
        ),
    )
    x0 = torch.randn(16, D, generator=g, dtype=F64)
    a = auto.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(5))
    d = dense.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, d, atol=1e-8)
    prior = auto.sample(x0, generator=torch.Generator().manual_seed(5))
    assert (a - prior).abs().max() > 1e-2


# ---------------------------------------------------------------------------- non-PSD
class _Perturbed(Denoiser):
    r"""``d(x_t) + x_t Gᵀ / γ_t`` (γ = σ²/α): the Tweedie covariance becomes C + G."""

    def __init__(self, base: Denoiser, G: torch.Tensor) -> None:
        super().__init__()
        self.base, self.G = base, G

    @property
    def schedule(self):
        return self.base.schedule

    def forward(self, x_t, t, **kwargs):
        alpha, sigma = self.schedule(t)
        return DiracPosterior(
            mean=self.base(x_t, t, **kwargs).mean + x_t @ self.G.T * alpha / sigma**2
        )


def _perturbation(P, H, R, sigma, eigenvalues, seed, observed_block=True):
    """G such that the symmetric part of the whitened observed covariance L⁻¹ H (C + G)ᵀ Hᵀ L⁻ᵀ
    has the given eigenvalues (random eigenvectors), plus an antisymmetric coupling of all
    components (``observed_block=True``: the raw observed covariance is then not symmetric)
    or of observed with unobserved ones only (it stays symmetric)."""
    D, M = P.shape[0], H.shape[0]
    g = torch.Generator().manual_seed(seed)
    C = sigma**2 * P @ torch.linalg.inv(P + sigma**2 * torch.eye(D, dtype=F64))
    C = 0.5 * (C + C.T)
    Lc = torch.linalg.cholesky(R)
    U = torch.linalg.qr(torch.randn(M, M, generator=g, dtype=F64))[0]
    target = Lc @ (U * torch.tensor(eigenvalues, dtype=F64)) @ U.T @ Lc.T
    W = torch.randn(D, D, generator=g, dtype=F64)
    K = W - W.T
    if not observed_block:
        K = K - H.T @ (H @ K @ H.T) @ H
    return H.T @ (target - H @ C @ H.T) @ H + K, C, U[:, 0]


def _dropped_posterior(C, G, H, R, y, x_hat):
    """x̂ + B L⁻ᵀ P₊ (I + S̃)⁻¹ L⁻¹ r: B = (C + G)ᵀ Hᵀ, S = L⁻¹ H B L⁻ᵀ symmetrised, S̃ its
    positive part, P₊ the projector on its positive eigen-directions (independent of the
    code: a projector and a dense solve instead of the spectral filter)."""
    B = (C + G).T @ H.T
    Lc = torch.linalg.cholesky(R)
    Li = torch.linalg.inv(Lc)
    S = Li @ H @ B @ Li.T
    w, V = torch.linalg.eigh(0.5 * (S + S.T))
    Vp = V[:, w > 0]
    Pp = Vp @ Vp.T
    S_pos = (Vp * w[w > 0]) @ Vp.T
    r = (y[None] - x_hat @ H.T) @ Li.T
    u = torch.linalg.solve(torch.eye(H.shape[0], dtype=F64) + S_pos, r.T).T @ Pp.T
    return x_hat + u @ Li @ B.T


@pytest.mark.parametrize("eigenvalues", [(-1 + 1e-6, 0.8, 2.0), (-3.0, -0.5, 1.5)])
@pytest.mark.parametrize("observed_block", [True, False])
def test_non_psd_covariance_gives_the_dropped_posterior(eigenvalues, observed_block):
    """A negative observed direction: λ = −1 + 10⁻⁶ makes Σ_y + H C Hᵀ nearly singular,
    λ = −3 makes it indefinite.  The guidance equals the independently computed posterior
    with those directions dropped (whole space and a Krylov space of dimension M, which must
    agree although the raw observed covariance is not symmetric), is finite and bounded by
    ‖B‖ ‖L⁻¹ r‖, and the safeguard mattered (the raw symmetrised solve differs)."""
    D, idx, t = 6, (0, 2, 5), 0.6
    sigma = _sigma(t)
    den, *_, P = _gaussian(D, seed=4)
    H, R, y, x_t, cond = _problem(D, idx, seed=5)
    G, C, _ = _perturbation(P, H, R, sigma, eigenvalues, seed=6, observed_block=observed_block)
    bad = _Perturbed(den, G)
    tt = torch.tensor(t, dtype=F64)
    x_hat = bad(x_t, tt, cond=cond).mean
    expected = _dropped_posterior(C, G, H, R, y, x_hat)
    steps = {}
    for rank in (None, len(idx)):
        got = ObservedMMPSDenoiser(bad, y, lambda u: u @ H.T, R, rank=rank)(x_t, tt, cond=cond)
        assert torch.isfinite(got.mean).all()
        assert torch.allclose(got.mean, expected, rtol=1e-7, atol=1e-8), rank
        steps[rank] = got.mean - x_hat
    Li = torch.linalg.inv(torch.linalg.cholesky(R))
    B = (C + G).T @ H.T @ Li.T
    r_w = (y[None] - x_hat @ H.T) @ Li.T
    bound = torch.linalg.matrix_norm(B, ord=2) * torch.linalg.vector_norm(r_w, dim=-1)
    assert (torch.linalg.vector_norm(steps[None], dim=-1) <= bound * (1 + 1e-9)).all()
    raw = ObservedMMPSDenoiser(bad, y, lambda u: u @ H.T, R, safeguard="none")(x_t, tt, cond=cond)
    assert (raw.mean - expected).abs().max() > 1e-1


def test_raw_krylov_explodes_where_the_observed_guidance_does_not():
    """Σ_y + H C Hᵀ nearly singular (whitened eigenvalue −1 + 10⁻⁶, symmetric raw observed
    covariance): the converged raw Krylov solve (GMRES, M iterations) takes a step 10³–10⁶
    times larger than the observation-space guidance, whose step stays within its bound."""
    D, idx, t = 6, (0, 2, 5), 0.6
    den, *_, P = _gaussian(D, seed=4)
    H, R, y, x_t, cond = _problem(D, idx, seed=5, full_R=False)
    noise = isotropic_noise(float(R[0, 0]) ** 0.5)
    G, _, _ = _perturbation(P, H, R, _sigma(t), (-1 + 1e-6, 0.8, 2.0), 6, observed_block=False)
    bad = _Perturbed(den, G)
    tt = torch.tensor(t, dtype=F64)
    x_hat = bad(x_t, tt, cond=cond).mean
    ours = ObservedMMPSDenoiser(bad, y, lambda u: u @ H.T, noise)(x_t, tt, cond=cond).mean
    raw = KrylovMMPSDenoiser(bad, y, lambda u: u @ H.T, noise, "gmres", 3)(x_t, tt, cond=cond).mean
    ours_step = torch.linalg.vector_norm(ours - x_hat, dim=-1)
    raw_step = torch.linalg.vector_norm(raw - x_hat, dim=-1)
    assert torch.isfinite(ours).all()
    assert (raw_step > 1e3 * ours_step).all()
    # the dense projection of the full C (D backward passes) is also bounded: both cure it
    proj = ProjectedMMPSDenoiser(bad, y, lambda u: u @ H.T, R)(x_t, tt, cond=cond).mean
    assert (torch.linalg.vector_norm(proj - x_hat, dim=-1) < 1e-2 * raw_step).all()


def test_krylov_safeguard_makes_no_update_along_negative_curvature():
    """rank = 1 and a residual along the negative eigen-direction (whitened λ = −3): the Ritz
    value is negative, so the guided mean is the unguided one; one raw CG step divides by
    rᵀ(Σ_y + S) r < 0 and moves against the observation."""
    D, idx, t = 6, (0, 2, 5), 0.6
    den, *_, P = _gaussian(D, seed=4)
    H, R, _, x_t, cond = _problem(D, idx, seed=5, full_R=False)
    noise = isotropic_noise(float(R[0, 0]) ** 0.5)
    G, _, u_neg = _perturbation(P, H, R, _sigma(t), (-3.0, 0.5, 1.5), 6, observed_block=False)
    bad = _Perturbed(den, G)
    tt = torch.tensor(t, dtype=F64)
    x_hat = bad(x_t[:1], tt, cond=cond[:1]).mean
    y = (x_hat @ H.T)[0] + 0.7 * R[0, 0].sqrt() * u_neg  # r_w = 0.7 u_neg
    ours = ObservedMMPSDenoiser(bad, y, lambda u: u @ H.T, noise, rank=1)
    got = ours(x_t[:1], tt, cond=cond[:1]).mean
    assert torch.allclose(got, x_hat, atol=1e-12)
    cg = KrylovMMPSDenoiser(bad, y, lambda u: u @ H.T, noise, "cg", 1)(x_t[:1], tt, cond=cond[:1])
    moved = (cg.mean - x_hat) @ H.T
    assert float(moved @ (y - x_hat @ H.T)[0]) < 0  # away from y


def test_observed_filter():
    lam = torch.tensor([-2.0, -1.0 + 1e-9, 0.0, 0.5, 3.0], dtype=F64)
    inv = 1 / (1 + lam)
    assert torch.equal(observed_filter(lam), torch.tensor([0, 0, 0, 1 / 1.5, 0.25], dtype=F64))
    assert torch.equal(
        observed_filter(lam, "clip"), torch.tensor([1, 1, 1, 1 / 1.5, 0.25], dtype=F64)
    )
    assert torch.equal(observed_filter(lam, "none"), inv)


# ---------------------------------------------------------------------------- cost, options


@pytest.mark.parametrize("rank, backward", [(None, 4), (1, 2), (2, 3), (7, 4)])
def test_network_passes_per_call(rank, backward):
    """One forward pass per call and M + 1 backward passes (M = 3), or k + 1 with a Krylov
    space of dimension k (capped at M), batched over particles — never D."""
    D, idx = 9, (1, 4, 8)
    den, *_ = _gaussian(D)
    H, R, y, x_t, cond = _problem(D, idx)
    counting = PassCountingDenoiser(den)
    guided = ObservedMMPSDenoiser(counting, y, lambda u: u @ H.T, R, rank=rank)
    guided(x_t, torch.tensor(0.5, dtype=F64), cond=cond)
    assert (counting.forwards, counting.backwards) == (1, backward)


def test_emulator_options_and_bad_values():
    m = make_lg_model()
    em = LinearGaussianEmulator(m.A, m.b, m.Q)
    assert em.guidance_covariance == "projected"  # D = 4: unchanged
    assert em.observed_krylov_rank(64) is None and em.observed_krylov_rank(65) == 8
    em = LinearGaussianEmulator(m.A, m.b, m.Q, covariance="observed", iterations=3)
    assert em.observed_krylov_rank(2) == 3 and em.observed_krylov_rank(500) == 3
    with pytest.raises(ValueError, match="covariance must be .*'observed', got 'observe'"):
        LinearGaussianEmulator(m.A, m.b, m.Q, covariance="observe")
    with pytest.raises(ValueError, match="iterations"):
        LinearGaussianEmulator(m.A, m.b, m.Q, covariance="observed", iterations=0)
    den, *_ = _gaussian(3)
    y = torch.zeros(2, dtype=F64)
    A = lambda u: u[:, :2]  # noqa: E731
    with pytest.raises(ValueError, match="rank must be an integer >= 1 or None, got 0"):
        ObservedMMPSDenoiser(den, y, A, torch.eye(2, dtype=F64), rank=0)
    with pytest.raises(ValueError, match="rank"):
        ObservedMMPSDenoiser(den, y, A, torch.eye(2, dtype=F64), rank=True)
    with pytest.raises(ValueError, match="safeguard must be one of .*got 'soft'"):
        ObservedMMPSDenoiser(den, y, A, torch.eye(2, dtype=F64), safeguard="soft")
    with pytest.raises(ValueError, match=r"cov_y must be \(2, 2\), got \(3, 3\)"):
        ObservedMMPSDenoiser(den, y, A, torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="cov_y must be symmetric positive definite"):
        ObservedMMPSDenoiser(den, y, A, -torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="cov_y must be positive definite"):
        ObservedMMPSDenoiser(den, y, A, IsotropicCovariance(0.0))
