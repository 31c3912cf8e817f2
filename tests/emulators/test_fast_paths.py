"""The cheaper code paths of the diffusion emulator give what the plain ones give
(issue #14; docs/performance.md): the precomputed exponential Adams–Bashforth plan, and the
opt-in compiled denoiser."""

from __future__ import annotations

import pytest
import torch
from azula import sample as azs

from genfilter.experiments.l63 import load_shipped_emulator


def test_precomputed_xeab_plan_is_bitwise_azulas_sampler():
    """sample() runs genfilter's loop with coefficients computed once; azula's
    xEABSampler recomputes them at every step: same draws bit for bit, with and without
    chunks, and the plan is reused across calls."""
    em = load_shipped_emulator(0.1)
    x = 5.0 * torch.randn(24, 3, generator=torch.Generator().manual_seed(0))
    ours = em.sample(x, generator=torch.Generator().manual_seed(1))
    u = em._initial_noise(x, torch.Generator().manual_seed(1))
    sampler = em._make_sampler(em.denoiser, x)
    assert type(sampler) is azs.xEABSampler
    with torch.no_grad():
        ref = em.from_target(sampler(u, cond=em.condition(x)), x)
    assert torch.equal(ours, ref)
    em.chunk_size = 12  # chunks of >= 11 rows: the same kernels (docs/performance.md)
    assert torch.equal(em.sample(x, generator=torch.Generator().manual_seed(1)), ref)
    assert len(em._xeab_plans) == 1


def test_compile_option_is_checked_and_leaves_the_module_unchanged():
    em = load_shipped_emulator(0.1)
    keys = list(em.state_dict())
    with pytest.raises(TypeError, match="compile"):
        load_shipped_emulator(0.1, compile="yes")
    compiled = load_shipped_emulator(0.1, compile=True)
    assert compiled.net is not compiled.denoiser  # the compiled wrapper
    assert compiled.net is compiled.net  # built once
    assert list(compiled.state_dict()) == keys  # checkpoints are unaffected
    assert em.net is em.denoiser


@pytest.mark.slow
def test_compiled_denoiser_draws_agree_with_eager_ones():
    """compile=True (torch.compile, ~1 min to compile on 2 cores): the guided draws agree
    with the eager ones to floating-point tolerance."""
    from genfilter.observations import Observation, Select, isotropic_noise

    eager = load_shipped_emulator(0.1, steps=8)
    compiled = load_shipped_emulator(0.1, steps=8, compile=True)
    x = 5.0 * torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    obs = Observation(torch.tensor([1.0, 20.0]), Select([0, 2]), isotropic_noise(0.25))
    a = eager.sample_posterior(x, obs, generator=torch.Generator().manual_seed(1))
    b = compiled.sample_posterior(x, obs, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("tracing", [False, True])
def test_fused_projected_guidance_is_the_projected_mmps_mean(tracing, monkeypatch):
    """projected_mmps_mean (what compile=True compiles: one batched vector–Jacobian
    product for the Jacobian rows, the affine observation map) gives the mean of
    ProjectedMMPSDenoiser on the shipped denoiser, at low noise (positive-definite
    covariance rows) and at high noise (rows the projection clips); ``tracing`` runs it
    as the compiler traces it (the closed-form 3 x 3 projection instead of eigh)."""
    from genfilter.emulators import guidance
    from genfilter.emulators.guidance import ProjectedMMPSDenoiser, projected_mmps_mean
    from genfilter.observations import Observation, Select, isotropic_noise, noise_matrix

    calls, traced = [], [False]  # traced[0]: what is_compiling says (the reference: no)
    closed_form = guidance.psd_projection_3x3

    def counted(C):
        calls.append(C.shape)
        return closed_form(C)

    monkeypatch.setattr(guidance, "psd_projection_3x3", counted)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced[0])

    em = load_shipped_emulator(0.1)
    g = torch.Generator().manual_seed(0)
    x_prev = 5.0 * torch.randn(32, 3, generator=g)
    obs = Observation(torch.tensor([1.0, 20.0]), Select([0, 2]), isotropic_noise(0.25))
    _, H = em._linear_observation(obs, x_prev, matrix=True)
    cond = em.condition(x_prev)

    def A(u):
        return obs.predict(em.from_target(u, x_prev))

    cov = noise_matrix(obs.noise, 2)
    ref = ProjectedMMPSDenoiser(em.denoiser, y=obs.y, A=A, cov_y=cov, H=H)
    clipped = 0
    for t in (0.2, 0.6, 0.95):
        alpha, sigma = em.schedule(torch.tensor(t))
        x_t = alpha * torch.randn(32, 3, generator=g) + sigma * torch.randn(32, 3, generator=g)
        want = ref(x_t, torch.tensor(t), cond=cond).mean
        with torch.no_grad():
            offset = A(torch.zeros_like(x_t)).to(torch.float64)
        traced[0] = tracing
        got = projected_mmps_mean(
            em.denoiser, x_t, torch.tensor(t), cond, obs.y.double(), H, cov.double(), offset
        )
        traced[0] = False
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (t, (got - want).abs().max())
        with torch.enable_grad():
            x_in = x_t.clone().requires_grad_()
            J = torch.stack(
                [
                    torch.autograd.grad(
                        em.denoiser(x_in, torch.tensor(t), cond=cond).mean[:, k].sum(), x_in
                    )[0]
                    for k in range(3)
                ],
                dim=1,
            )
        C = 0.5 * (J + J.transpose(1, 2)).double()
        clipped += int((torch.linalg.cholesky_ex(C).info != 0).sum())
    assert clipped > 0  # the projection's other branch was exercised
    assert len(calls) == (3 if tracing else 0)


def test_fused_guidance_needs_an_affine_map_and_the_clip():
    from genfilter.emulators.guidance import ProjectedMMPSDenoiser, projected_mmps_mean

    em = load_shipped_emulator(0.1)
    y, cov = torch.zeros(2), torch.eye(2)
    with pytest.raises(ValueError, match="fused"):
        ProjectedMMPSDenoiser(
            em.denoiser, y=y, A=lambda u: u[:, :2], cov_y=cov, fused=projected_mmps_mean
        )


def _guided_call_inputs(n: int, compile: bool = False):
    """The shipped denoiser and the arguments of one projected guided call on setup (a)'s
    observation, for ``n`` particles at a noise level where some rows get clipped."""
    from genfilter.observations import Observation, Select, isotropic_noise, noise_matrix

    em = load_shipped_emulator(0.1, compile=compile)
    g = torch.Generator().manual_seed(0)
    x_prev = 5.0 * torch.randn(n, 3, generator=g)
    obs = Observation(torch.tensor([1.0, 20.0]), Select([0, 2]), isotropic_noise(0.25))
    _, H = em._linear_observation(obs, x_prev, matrix=True)
    t = torch.tensor(0.9)
    alpha, sigma = em.schedule(t)
    x_t = alpha * torch.randn(n, 3, generator=g) + sigma * torch.randn(n, 3, generator=g)
    with torch.no_grad():
        offset = obs.predict(em.from_target(torch.zeros_like(x_t), x_prev)).double()
    cov = noise_matrix(obs.noise, 2).double()
    return em, (em.denoiser, x_t, t, em.condition(x_prev), obs.y.double(), H, cov, offset)


def test_compiled_guided_call_runs_whole_up_to_its_threshold_and_split_above(monkeypatch):
    """CompiledProjectedMMPS (compile=True's guided call; torch.compile replaced by the
    identity here) runs projected_mmps_mean up to max_fused_rows particles and, above, the
    network with its rows by separate products and projected_update: the same mean."""
    from genfilter.emulators import guidance

    monkeypatch.setattr(torch, "compile", lambda f, **kwargs: f)
    em, args = _guided_call_inputs(24)
    used = []
    call = guidance.CompiledProjectedMMPS(em.denoiser, max_fused_rows=16)
    whole, update = call.whole, call.update
    call.whole = lambda *a: used.append("whole") or whole(*a)
    call.update = lambda *a: used.append("update") or update(*a)
    split = call(*args)
    assert used == ["update"]
    fused = call(args[0], args[1][:16], args[2], args[3][:16], *args[4:7], args[7][:16])
    assert used == ["update", "whole"]
    want = guidance.projected_mmps_mean(*args)
    assert torch.allclose(split, want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(fused, want[:16], rtol=1e-5, atol=1e-5)
    # and the emulator builds it with its threshold
    compiled = load_shipped_emulator(0.1, compile=True)
    assert compiled.fused_guidance.max_fused_rows == compiled.FUSED_MAX_ROWS
    assert compiled.fused_guidance.net is compiled.net
    assert em.fused_guidance is None


@pytest.mark.slow
def test_compiled_guided_call_split_and_whole_agree():
    """Compiled for real (~30 s on 2 cores): the two forms of CompiledProjectedMMPS give
    the same mean to floating-point tolerance."""
    from genfilter.emulators.guidance import CompiledProjectedMMPS

    em, args = _guided_call_inputs(24, compile=True)
    whole = CompiledProjectedMMPS(em.net, max_fused_rows=24)(*args)
    split = CompiledProjectedMMPS(em.net, max_fused_rows=16)(*args)
    assert torch.allclose(whole, split, rtol=1e-6, atol=1e-6)
