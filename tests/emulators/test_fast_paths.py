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
