"""Properties of the DiffusionEmulator code path, checked on the exact linear-Gaussian
denoiser where every quantity has a closed form (docs/method.md#linear-gaussian-reference)."""

from __future__ import annotations

import math

import pytest
import torch
from azula.denoise import Denoiser, DiracPosterior
from conftest import make_lg_model

from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.observations import Observation, Select, isotropic_noise

N_MC = 20000


def _emulator(model, **kw):
    kw.setdefault("iterations", 4)  # exact Krylov solve for M = 2
    return LinearGaussianEmulator(model.A, model.b, model.Q, **kw)


def _x0(model, n=N_MC, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, model.D, generator=g, dtype=torch.float64).expand(n, -1).clone()


def _obs():
    return Observation(
        torch.tensor([0.3, -0.5], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )


@pytest.mark.parametrize("residual", [False, True])
def test_sample_matches_transition(residual):
    """(a) sample ~ N(Ax + b, Q): mean within 5 MC standard errors, covariance within 5 %
    (xeab, 64 steps; MC sd of a variance at N = 20000 is 1 %)."""
    model = make_lg_model()
    em = _emulator(model, mean=0.5, std=2.0, residual=residual, residual_std=0.7)
    x0 = _x0(model)
    xs = em.sample(x0, generator=torch.Generator().manual_seed(1))
    mean = em.transition_mean(x0[:1])[0]
    se = torch.sqrt(torch.diagonal(model.Q) / N_MC)
    assert ((xs.mean(0) - mean).abs() <= 5 * se).all()
    C = torch.cov(xs.T)
    scale = torch.sqrt(torch.outer(torch.diagonal(model.Q), torch.diagonal(model.Q)))
    assert ((C - model.Q).abs() / scale).max() < 0.05


def test_predict_mean_is_transition_mean():
    """predict_mean = E[x^{k+1} | x^k] = A x + b up to the signal left in x_1 = σ_1 z:
    the exact denoiser returns A x + b + Q (Q + σ_1² I)⁻¹ σ_1 z ≈ A x + b + Q z / σ_1, whose
    sd per component is sqrt(diag Q²) / σ_1 (σ_1 = 100); allow 5 of those."""
    model = make_lg_model()
    em = _emulator(model)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, model.D, generator=g, dtype=torch.float64)
    mu = em.predict_mean(x, generator=g)
    sd = torch.sqrt(torch.diagonal(model.Q @ model.Q)) / 100.0
    assert ((mu - em.transition_mean(x)).abs() <= 5 * sd).all()
    # ... and the error is really that signal: it vanishes as σ_1 grows
    from azula.noise import VESchedule

    em2 = _emulator(model, schedule=VESchedule(sigma_min=1e-3, sigma_max=1e5))
    mu2 = em2.predict_mean(x, generator=torch.Generator().manual_seed(5))
    assert ((mu2 - em.transition_mean(x)).abs() <= 5e-3 * sd).all()


class _BiasedAtTimeOne(Denoiser):
    """The exact denoiser, off by ``bias`` at t = 1 only: a network that is poor at the
    highest noise level, as the shipped Lorenz-63 one was measured to be."""

    def __init__(self, exact, bias):
        super().__init__()
        self.exact, self.bias, self.schedule = exact, bias, exact.schedule

    def forward(self, x_t, t, cond=None, **kw):
        mean = self.exact(x_t, t, cond=cond).mean
        return DiracPosterior(mean=mean + self.bias * (t >= 1).to(mean.dtype))


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_fixed_point_mean_contracts_as_the_closed_form_says(iterations):
    """With ``mean_sigma = s`` the mean is u_k = d(α u_{k-1}, t) from u_0 = d(0, 1); for the
    exact Gaussian denoiser d(α u, t) = μ + P (P + s² I)⁻¹ (u − μ), so the error of the
    first guess is multiplied by [P (P + s² I)⁻¹]^k, however biased that guess is
    (docs/method.md#tweedie-mean); the paper's one call at t = 1 keeps the whole bias."""
    model = make_lg_model()
    bias = torch.tensor([3.0, -2.0, 1.0, 0.5], dtype=torch.float64)
    s = 0.7
    em = _emulator(model, mean_sigma=s, mean_iterations=iterations)
    paper = _emulator(model)
    for e in (em, paper):
        e.denoiser = _BiasedAtTimeOne(e.denoiser, bias)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, model.D, generator=g, dtype=torch.float64)
    mu = em.transition_mean(x)
    u0 = em.denoiser(torch.zeros_like(x), torch.ones(()), cond=em.condition(x)).mean
    P = model.Q
    contraction = torch.linalg.matrix_power(
        P @ torch.linalg.inv(P + s**2 * torch.eye(model.D, dtype=torch.float64)), iterations
    )
    want = mu + (u0 - mu) @ contraction.T
    got = em.predict_mean(x, generator=g)
    assert torch.allclose(got, want, atol=1e-8)
    # the same mean feeds the gaussian weights' H(mu)
    _, hmu, _ = em.predict_obs_moments(x, _obs(), generator=g)
    assert torch.allclose(hmu, want[:, [0, 2]], atol=1e-8)
    err_paper = (paper.predict_mean(x, generator=g) - mu).norm(dim=1)
    assert torch.allclose(err_paper, bias.norm().expand(6), rtol=0.01)
    if iterations == 3:
        assert ((got - mu).norm(dim=1) < 0.5 * err_paper).all()


def test_predict_obs_moments_match_closed_form():
    """ "gaussian" weights ingredients: H(μ) and H V Hᵀ ≈ H Q Hᵀ at t = 1 (Tweedie,
    docs/method.md#tweedie-covariance)."""
    model = make_lg_model()
    em = _emulator(model, mean=-0.2, std=1.5)
    obs = _obs()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(7, model.D, generator=g, dtype=torch.float64)
    _mu, hmu, hvh = em.predict_obs_moments(x, obs, generator=g)
    pred_mean, pred_cov = em.exact_predictive(x, obs)
    R = 0.25 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(hmu, pred_mean, atol=0.05)  # see test_predict_mean_...
    assert torch.allclose(hvh, (pred_cov - R).expand(7, 2, 2), rtol=2e-3, atol=2e-3)


def test_posterior_matches_optimal_proposal():
    """(b) MMPS-guided sample_posterior matches the closed-form optimal proposal
    p(x^{k+1} | x^k, y): mean within 5 MC standard errors, covariance within 5 %."""
    model = make_lg_model()
    em = _emulator(model, mean=0.5, std=2.0)
    x0, obs = _x0(model), _obs()
    xp = em.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
    m, P = em.exact_posterior(x0[:1], obs)
    se = torch.sqrt(torch.diagonal(P) / N_MC)
    assert ((xp.mean(0) - m[0]).abs() <= 5 * se).all()
    scale = torch.sqrt(torch.outer(torch.diagonal(P), torch.diagonal(P)))
    assert ((torch.cov(xp.T) - P).abs() / scale).max() < 0.05


def test_posterior_discretisation_error_shrinks_with_steps():
    """(b) The sampler's discretisation error on the posterior variance shrinks as the number of
    steps grows (DDIM η = 1 under-disperses, −45 % at 16 steps; docs/method.md#sampling)."""
    model = make_lg_model()
    x0, obs = _x0(model, n=8000), _obs()
    errors = []
    for steps in (8, 32, 128):
        em = _emulator(model, sampler="ddim", eta=1.0, steps=steps)
        xp = em.sample_posterior(x0, obs, generator=torch.Generator().manual_seed(2))
        _, P = em.exact_posterior(x0[:1], obs)
        ratio = torch.diagonal(torch.cov(xp.T)) / torch.diagonal(P)
        errors.append(float((ratio - 1).abs().mean()))
    print("DDIM posterior variance error at 8, 32, 128 steps:", [round(e, 3) for e in errors])
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] > 0.3  # the bias is real at few steps ...
    assert errors[2] < 0.1  # ... and mostly gone at 128


@pytest.mark.parametrize("method", ["sample", "sample_posterior", "predict_mean"])
@pytest.mark.parametrize("sampler", ["ddim", "xeab", "pc"])
def test_chunking_does_not_change_results(method, sampler):
    """chunk_size = 1, 7 and N give bit-identical results for a fixed generator (the
    noise of particle i does not depend on the chunking; this denoiser's arithmetic is
    row-wise — a network's batched matmul may differ in the last bits, see docs)."""
    model = make_lg_model()
    g = torch.Generator().manual_seed(9)
    x = torch.randn(23, model.D, generator=g, dtype=torch.float64)
    outs = []
    for chunk in (1, 7, None):
        em = _emulator(
            model,
            sampler=sampler,
            steps=6,
            chunk_size=chunk,
            sampler_kwargs={"corrections": 1} if sampler == "pc" else None,
        )
        gen = torch.Generator().manual_seed(11)
        if method == "sample_posterior":
            outs.append(em.sample_posterior(x, _obs(), generator=gen))
        else:
            outs.append(getattr(em, method)(x, generator=gen))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_generator_reproducibility_and_isolation():
    """Same generator seed -> same draws; the global RNG is neither used nor needed."""
    model = make_lg_model()
    em = _emulator(model, sampler="ddim", steps=5)
    x = _x0(model, n=10)
    torch.manual_seed(0)
    a = em.sample(x, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(123)
    b = em.sample(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    c = em.sample(x, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(a, c)


def test_missing_values_are_dropped():
    """A NaN entry of y is ignored: same result as observing only the other component."""
    model = make_lg_model()
    em = _emulator(model, steps=8)
    x = _x0(model, n=50)
    y = torch.tensor([0.3, float("nan")], dtype=torch.float64)
    with_nan = em.sample_posterior(
        x,
        Observation(y, Select([0, 2]), isotropic_noise(0.5)),
        generator=torch.Generator().manual_seed(1),
    )
    only = em.sample_posterior(
        x,
        Observation(y[:1], Select([0]), isotropic_noise(0.5)),
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.allclose(with_nan, only)


def test_bad_inputs_name_the_argument():
    model = make_lg_model()
    em = _emulator(model, steps=4)
    with pytest.raises(ValueError, match="x_prev"):
        em.sample(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="x_prev.*non-finite"):
        em.sample(torch.full((5, 4), math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match="H\\(x\\) must be"):
        bad = Observation(torch.zeros(3, dtype=torch.float64), Select([0, 2]), isotropic_noise(1.0))
        em.sample_posterior(_x0(model, n=4), bad)
    with pytest.raises(ValueError, match="sampler"):
        _emulator(model, sampler="nope")
    with pytest.raises(ValueError, match="Q must be"):
        LinearGaussianEmulator(model.A, model.b, -model.Q)
    with pytest.raises(ValueError, match="std"):
        _emulator(model, std=-1.0)
    with pytest.raises(ValueError, match="mean_sigma"):
        _emulator(model, mean_sigma=0.0)
    with pytest.raises(ValueError, match="mean_iterations"):
        _emulator(model, mean_sigma=0.3, mean_iterations=-1)


def test_non_finite_guidance_is_an_error_naming_the_step():
    """A guided step that produces NaN raises instead of propagating NaN particles."""
    model = make_lg_model()
    em = _emulator(model, steps=4, sampler="ddim")

    def nan_operator(x):
        return x[:, :2] * torch.nan

    obs = Observation(torch.zeros(2, dtype=torch.float64), nan_operator, isotropic_noise(1.0))
    with pytest.raises(FloatingPointError, match="diffusion step 0"):
        em.sample_posterior(_x0(model, n=4), obs)
    # multistep samplers run as one block: the error still comes, naming the method
    em = _emulator(model, steps=4, sampler="xeab")
    with pytest.raises(FloatingPointError, match="sample_posterior produced non-finite"):
        em.sample_posterior(_x0(model, n=4), obs)


def test_moments_sigma_calibration_is_exact_for_a_gaussian_transition():
    """For a Gaussian transition the deconvolved covariance is the transition covariance at
    every noise level, so every level of the ladder scores only the Monte-Carlo error of
    the draws' variances (about sqrt(2 / draws) per variance, 3 % at 2000 draws); a
    denoiser whose covariance is off at low noise only must be caught at those levels."""
    model = make_lg_model()
    em = _emulator(model, mean_sigma=0.3, mean_iterations=2)
    g = torch.Generator().manual_seed(8)
    states = torch.randn(5, model.D, generator=g, dtype=torch.float64)
    cal = em.calibrate_moments_sigma(states, ladder=(0.1, 0.3, 1.0), draws=2000, generator=g)
    assert set(cal.errors) == {0.1, 0.3, 1.0} and cal.best in cal.errors
    assert max(cal.errors.values()) < 0.06
    assert em.moments_sigma == 0.1  # left as it was


class _TwoModes(Denoiser):
    """Exact denoiser of a transition that ignores the previous state and is bimodal:
    u ~ ½ N(−a, v) + ½ N(a, v) (variance v + a²)."""

    def __init__(self, schedule, a=2.0, v=0.25):
        super().__init__()
        self.schedule, self.a, self.v = schedule, a, v

    def forward(self, x_t, t, cond=None, **kw):
        alpha, sigma = self.schedule(t.to(x_t.dtype))
        s2 = alpha**2 * self.v + sigma**2
        means = torch.stack([torch.full_like(x_t, -self.a), torch.full_like(x_t, self.a)])
        logp = -((x_t - alpha * means) ** 2) / (2 * s2)
        w = torch.softmax(logp, dim=0)
        post = means + (alpha * self.v / s2) * (x_t - alpha * means)
        return DiracPosterior(mean=(w * post).sum(0))


def test_moments_sigma_calibration_prefers_a_high_level_for_a_bimodal_transition():
    """For a bimodal transition the mean sits between the modes, where the density is
    locally convex: deconvolved at a low noise level the covariance blows up (clipped at
    10⁶ r) up to a level of the modes' half-distance a, while above it the deconvolved
    covariance is close to the variance v + a²;
    the calibration, which compares with the emulator's own draws, must see it."""
    em = LinearGaussianEmulator(
        torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), mean_sigma=0.3, mean_iterations=2
    )
    em.denoiser = _TwoModes(em.denoiser.schedule)
    g = torch.Generator().manual_seed(9)
    states = torch.zeros(3, 1, dtype=torch.float64)
    draws = em.sample(states.repeat_interleave(4000, 0), generator=g)
    assert abs(float(draws.var()) - 4.25) < 0.3  # the sampler does draw the mixture
    cal = em.calibrate_moments_sigma(states, ladder=(0.1, 1.0, 3.0), draws=2000, generator=g)
    assert cal.errors[0.1] > 5.0  # a blow-up, not an approximation error
    assert cal.best == 3.0 and cal.errors[3.0] < 1.0


def test_moments_sigma_calibration_rejects_bad_input():
    model = make_lg_model()
    em = _emulator(model)
    x = torch.zeros(2, model.D, dtype=torch.float64)
    with pytest.raises(ValueError, match="ladder"):
        em.calibrate_moments_sigma(x, ladder=(0.1, -1.0))
    with pytest.raises(ValueError, match="draws"):
        em.calibrate_moments_sigma(x, draws=1)
