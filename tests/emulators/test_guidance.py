"""Projected MMPS guidance and the deconvolved transition covariance
(docs/method.md#projected-covariance; emulators/guidance.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lg_model

from genfilter.emulators.guidance import (
    deconvolved_covariance,
    projected_covariance,
    psd_projection_3x3,
    time_of_log_ratio,
)
from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.observations import Lambda, Observation, Select, isotropic_noise


def _spd(D, seed):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(D, D, generator=g, dtype=torch.float64)
    return L @ L.T + 0.1 * torch.eye(D, dtype=torch.float64)


def test_projection_keeps_psd_and_clips_negative_directions():
    P = _spd(5, 0)[None]
    assert torch.allclose(projected_covariance(P, 1.0), P, atol=1e-12)
    # an indefinite, non-symmetric "Jacobian": the result is its symmetric part with the
    # negative eigenvalues set to zero
    g = torch.Generator().manual_seed(1)
    J = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    C = projected_covariance(J, 2.0)
    assert torch.allclose(C, C.transpose(1, 2))
    w = torch.linalg.eigvalsh(C)
    assert (w >= -1e-12).all()
    ws = torch.linalg.eigvalsh(0.5 * (2 * J + 2 * J.transpose(1, 2)))
    assert torch.allclose(w, ws.clamp_min(0.0), atol=1e-10)


def test_deconvolution_inverts_the_gaussian_posterior_covariance():
    """C = (P⁻¹ + I/r)⁻¹ ⇒ deconvolved_covariance(C, r) = P."""
    for r in (0.01, 1.0, 30.0):
        P = _spd(3, 2)[None] * 0.05
        C = torch.linalg.inv(torch.linalg.inv(P) + torch.eye(3, dtype=torch.float64) / r)
        assert torch.allclose(deconvolved_covariance(C, r), P, rtol=1e-8, atol=1e-12)


def test_time_of_log_ratio_inverts_the_schedule():
    m = make_lg_model()
    em = LinearGaussianEmulator(m.A, m.b, m.Q)
    target = torch.tensor([-3.0, 0.0, 2.5], dtype=torch.float64)
    t = time_of_log_ratio(em.schedule, target)
    a, s = em.schedule(t)
    assert torch.allclose(torch.log(s / a), target, atol=1e-9)


def _obs():
    return Observation(
        torch.tensor([0.3, -0.5], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )


def _x0(D, n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, D, generator=g, dtype=torch.float64).expand(n, -1).clone()


def test_projected_equals_exact_mmps_on_a_symmetric_psd_jacobian():
    """The exact linear-Gaussian denoiser has a symmetric PSD Jacobian: projecting changes
    nothing, so the dense solve equals the (converged) Krylov solve particle by particle."""
    m = make_lg_model()
    kw = dict(steps=16, iterations=8)
    x0 = _x0(m.D, 64)
    a = LinearGaussianEmulator(m.A, m.b, m.Q, covariance="projected", **kw)
    b = LinearGaussianEmulator(m.A, m.b, m.Q, covariance="tweedie", **kw)
    xa = a.sample_posterior(x0, _obs(), generator=torch.Generator().manual_seed(4))
    xb = b.sample_posterior(x0, _obs(), generator=torch.Generator().manual_seed(4))
    assert torch.allclose(xa, xb, atol=1e-7)


def test_gaussian_weight_moments_use_the_deconvolved_covariance():
    """On the exact denoiser the deconvolved covariance at any moments_sigma is Q."""
    m = make_lg_model()
    obs = _obs()
    x = _x0(m.D, 5)
    for s in (0.05, 0.5):
        em = LinearGaussianEmulator(m.A, m.b, m.Q, moments_sigma=s)
        _, _, hvh = em.predict_obs_moments(x, obs, generator=torch.Generator().manual_seed(1))
        HQH = m.Q[[0, 2]][:, [0, 2]]
        assert torch.allclose(hvh, HQH.expand(5, 2, 2), rtol=1e-6, atol=1e-8)


def test_bad_covariance_options_name_the_argument():
    m = make_lg_model()
    with pytest.raises(ValueError, match="covariance"):
        LinearGaussianEmulator(m.A, m.b, m.Q, covariance="dense")
    with pytest.raises(ValueError, match="moments_sigma"):
        LinearGaussianEmulator(m.A, m.b, m.Q, moments_sigma=0.0)


def test_a_linear_operator_gives_the_same_guidance_through_its_matrix():
    """Select (linear: its matrix formed once) and the same map as a Lambda (not declared
    linear: M vector–Jacobian products per diffusion step) give the same proposal draws,
    also with a residual target (H is scaled by dx/du)."""
    m = make_lg_model()
    x0 = _x0(m.D, 16)
    y = torch.tensor([0.3, -0.5], dtype=torch.float64)
    lin = Observation(y, Select([0, 2]), isotropic_noise(0.5))
    nonlin = Observation(y, Lambda(lambda z: z[:, [0, 2]]), isotropic_noise(0.5))
    for kw in ({}, {"residual": True, "residual_std": 0.7, "std": 2.0}):
        em = LinearGaussianEmulator(m.A, m.b, m.Q, covariance="projected", steps=8, **kw)
        a = em.sample_posterior(x0, lin, generator=torch.Generator().manual_seed(4))
        b = em.sample_posterior(x0, nonlin, generator=torch.Generator().manual_seed(4))
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_projection_of_positive_definite_rows_skips_the_eigendecomposition_exactly():
    """Rows that are already positive definite are returned as their symmetric part; the
    others are clipped; a mixed batch gives what each row alone gives."""
    g = torch.Generator().manual_seed(5)
    J = torch.randn(6, 3, 3, generator=g, dtype=torch.float64)
    J[::2] = _spd(3, 7)  # positive definite rows
    C = projected_covariance(J, 0.5)
    for i in range(6):
        alone = projected_covariance(J[i : i + 1], 0.5)[0]
        w, V = torch.linalg.eigh(0.25 * (J[i] + J[i].T))
        ref = (V * w.clamp_min(0.0)) @ V.T
        assert torch.allclose(C[i], alone, atol=1e-14)
        assert torch.allclose(C[i], ref, atol=1e-12)
    assert torch.equal(C[::2], 0.25 * (J[::2] + J[::2].transpose(1, 2)))


def test_closed_form_projection_is_the_eigh_projection():
    """The closed-form 3 x 3 projection (what a compiled guided call runs for Lorenz-63)
    against eigh's: random symmetric matrices, scaled and shifted ones, and nearly
    degenerate ones (double eigenvalues, eigenvalues over 12 decades, rank 0 to 2, C = qI),
    with every count of negative eigenvalues."""
    g = torch.Generator().manual_seed(0)
    n = 8000
    B = torch.randn(n, 3, 3, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    w = torch.randn(n, 3, generator=g, dtype=torch.float64)
    w[: n // 4, 1] = w[: n // 4, 0]
    w[n // 4 : n // 2] *= torch.logspace(-12, 0, 3, dtype=torch.float64)
    w[n // 2 : 3 * n // 4] = 1e-9 * w[n // 2 : 3 * n // 4] + torch.randn(n // 4, 1, generator=g)
    w[-300:-200, 0] = 0.0
    w[-200:-100, :2] = 0.0
    w[-100:-50] = 0.0
    w[-50:] = -1.5
    cases = [
        (B + B.transpose(1, 2), 1e-12),
        (1e6 * (B + B.transpose(1, 2)) + 3e6 * torch.eye(3, dtype=torch.float64), 1e-12),
        ((Q * w[:, None]) @ Q.transpose(1, 2), 1e-7),
    ]
    negatives = set()
    for C, tol in cases:
        ev, V = torch.linalg.eigh(C)
        negatives |= set((ev < 0).sum(-1).tolist())
        ref = (V * ev.clamp_min(0.0)[:, None]) @ V.transpose(1, 2)
        scale = C.abs().amax((1, 2)).clamp_min(1e-300)[:, None, None]
        got = psd_projection_3x3(C)
        assert torch.isfinite(got).all()
        assert ((got - ref).abs() / scale).max() < tol
    assert negatives == {0, 1, 2, 3}
