"""Properties of the stochastic-interpolant emulator (Savary, Rozet & Louppe 2026, App. E;
docs/method.md#stochastic-interpolants), checked on a linear-Gaussian transition
x' = A x + b + w, w ~ N(0, Q), where the interpolant's velocity, score, end-point estimate,
transition and optimal proposal all have closed forms (Gaussian conditioning)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lg_model, simulate_lg
from exact_interpolant import ExactVelocity, target_model

from genfilter.emulators import StochasticInterpolantEmulator
from genfilter.emulators.interpolant import Interpolant, _coefs, _endpoint
from genfilter.emulators.linear_gaussian import LinearGaussianEmulator
from genfilter.filters.base import assimilate
from genfilter.filters.fa_apf import FAAPF
from genfilter.filters.kalman import KalmanFilter
from genfilter.observations import (
    Lambda,
    Observation,
    Select,
    isotropic_noise,
    synthetic_observations,
)


def _setup(beta="quadratic", epsilon=1.0, **kw):
    model = make_lg_model()
    it = Interpolant(beta, epsilon)
    em = StochasticInterpolantEmulator(
        ExactVelocity(model.A, model.b, model.Q, it), (model.D,), interpolant=it, **kw
    )
    return model, em


def _x0(model, n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, model.D, generator=g, dtype=torch.float64).expand(n, -1).clone()


def _obs():
    return Observation(
        torch.tensor([0.3, -0.5], dtype=torch.float64), Select([0, 2]), isotropic_noise(0.5)
    )


def _close_cov(C, P, tol):
    scale = torch.sqrt(torch.outer(torch.diagonal(P), torch.diagonal(P)))
    err = ((C - P).abs() / scale).max().item()
    return err, err < tol


# ---------------------------------------------------------------------------- identities
@pytest.mark.parametrize("beta", ["quadratic", "linear"])
def test_endpoint_and_score_from_the_velocity_are_the_gaussian_ones(beta):
    """From the exact velocity, the emulator's end-point estimate m = E[u | I_s = x] and its
    score (β m − (x − α a))/γ² equal the Gaussian conditional mean and ∇ log N(x; mean,
    cov) of I_s | a, at random s and x (to 1e-9)."""
    model, em = _setup(beta)
    g = torch.Generator().manual_seed(0)
    n = 64
    a = torch.randn(n, model.D, generator=g, dtype=torch.float64)
    x = 2 * torch.randn(n, model.D, generator=g, dtype=torch.float64)
    vel = em.velocity
    for s in (0.05, 0.3, 0.7, 0.95):
        st = torch.full((n,), s, dtype=torch.float64)
        mean, cov = vel.moments(st, a)
        k = _coefs(em.interpolant, s, x)
        m = _endpoint(k, x, a, vel(st, x, a))
        mu = a @ model.A.T + model.b
        # E[u | I_s] = μ + β Q cov⁻¹ (x − mean)
        want = mu + k["beta"] * (
            model.Q @ torch.linalg.solve(cov, (x - mean).unsqueeze(-1))
        ).squeeze(-1)
        assert torch.allclose(m, want, atol=1e-9)
        score = (k["beta"] * m - (x - k["alpha"] * a)) / k["gamma2"]
        want_score = -torch.linalg.solve(cov, (x - mean).unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(score, want_score, atol=1e-8)
        assert torch.allclose(em.endpoint(s, x, a), m, atol=1e-12)


# ---------------------------------------------------------------------------- sample
@pytest.mark.parametrize(
    "beta, kw",
    [
        ("quadratic", {}),
        ("linear", {}),
        ("quadratic", {"diffusion": 0.5, "s_max": 0.999}),
        ("linear", {"diffusion": 0.0, "s_max": 0.999}),
    ],
)
def test_sample_reproduces_the_transition(beta, kw):
    """sample ~ N(A x + b, Q) with 200 Euler–Maruyama steps: N = 4000 draws from one x^k,
    mean within 5 MC standard errors, covariance within 10 % (MC sd of a normalised entry
    ≤ sqrt(2/N) ≈ 0.022; EM adds O(1/steps)).  The constant-g case checks the Föllmer
    adjustment (score from the velocity)."""
    model, em = _setup(beta, steps=200, **kw)
    N = 4000
    x0 = _x0(model, N)
    xs = em.sample(x0, generator=torch.Generator().manual_seed(1))
    mean = x0[0] @ model.A.T + model.b
    se = torch.sqrt(torch.diagonal(model.Q) / N)
    z = ((xs.mean(0) - mean).abs() / se).max().item()
    err, ok = _close_cov(torch.cov(xs.T), model.Q, 0.10)
    print(f"{beta} {kw}: mean {z:.2f} se, covariance error {err:.3f}")
    assert z < 5
    assert ok


def test_results_do_not_depend_on_chunking():
    model, em = _setup(steps=20)
    x0 = torch.randn(23, model.D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = em.sample(x0, generator=torch.Generator().manual_seed(4))
    em.chunk_size = 5
    b = em.sample(x0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    p = em.sample_posterior(x0, _obs(), generator=torch.Generator().manual_seed(4))
    em.chunk_size = None
    q = em.sample_posterior(x0, _obs(), generator=torch.Generator().manual_seed(4))
    assert torch.allclose(p, q, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------- mean, moments
@pytest.mark.parametrize(
    "beta, mean_time", [("quadratic", None), ("quadratic", 0.2), ("linear", None), ("linear", 0.2)]
)
def test_predict_mean_is_exact(beta, mean_time):
    """predict_mean = A x + b to 1e-9: at s = 0 in closed form (β'_0 ≠ 0), else as the
    fixed point of the end-point estimate (exact for a Gaussian transition)."""
    model, em = _setup(beta, mean_time=mean_time, mean_iterations=40)
    x = torch.randn(50, model.D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    mu = em.predict_mean(x)
    assert torch.allclose(mu, x @ model.A.T + model.b, atol=1e-9)


@pytest.mark.parametrize("residual", [False, True])
def test_predict_obs_moments_are_the_exact_predictive(residual):
    """With a non-trivial normalisation (and a residual target), predict_mean = A x + b,
    H(μ) = H(A x + b) and H P Hᵀ = H Q Hᵀ (linear H) to 1e-8."""
    model = make_lg_model()
    it = Interpolant()
    mean = torch.tensor([0.5, -1.0, 0.2, 2.0], dtype=torch.float64)
    std = torch.tensor([2.0, 0.5, 1.5, 3.0], dtype=torch.float64)
    F, g, P = target_model(model.A, model.b, model.Q, mean, std, residual, 0.7)
    em = StochasticInterpolantEmulator(
        ExactVelocity(F, g, P, it, residual),
        (model.D,),
        mean=mean,
        std=std,
        residual=residual,
        residual_std=0.7,
        interpolant=it,
        mean_iterations=40,
    )
    x = torch.randn(20, model.D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    mu, hmu, hph = em.predict_obs_moments(x, _obs())
    lg = LinearGaussianEmulator(model.A, model.b, model.Q)
    m, S = lg.exact_predictive(x, _obs())
    R = 0.25 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(mu, x @ model.A.T + model.b, atol=1e-8)
    assert torch.allclose(hmu, m, atol=1e-8)
    assert torch.allclose(hph, (S - R).expand(20, -1, -1), atol=1e-8)


# ---------------------------------------------------------------------------- posterior
@pytest.mark.parametrize("covariance", ["projected", "tweedie"])
def test_sample_posterior_is_the_exact_optimal_proposal(covariance):
    """sample_posterior ~ p(x^{k+1} | x^k, y) = N(m, P) (closed form) with 100 steps,
    N = 4000: mean within 5 MC standard errors, covariance within 10 %."""
    model, em = _setup(steps=100, covariance=covariance, solver="cg", iterations=2)
    N = 4000
    x0 = _x0(model, N)
    xs = em.sample_posterior(x0, _obs(), generator=torch.Generator().manual_seed(2))
    m, P = LinearGaussianEmulator(model.A, model.b, model.Q).exact_posterior(x0[:1], _obs())
    se = torch.sqrt(torch.diagonal(P) / N)
    z = ((xs.mean(0) - m[0]).abs() / se).max().item()
    err, ok = _close_cov(torch.cov(xs.T), P, 0.10)
    print(f"{covariance}: mean {z:.2f} se, covariance error {err:.3f}")
    assert z < 5
    assert ok


@pytest.mark.parametrize("covariance", ["projected", "tweedie"])
def test_a_linear_operator_gives_the_same_posterior_drift_through_its_linear_part(covariance):
    """Select (linear: its matrix / linear part) and the same map as a Lambda (not declared
    linear: VJPs and JVPs of H at every SDE step) give the same draws, residual target
    included."""
    lam = Observation(_obs().y, Lambda(lambda z: z[:, [0, 2]]), isotropic_noise(0.5))
    for kw in ({}, {"residual": True, "residual_std": 0.7, "std": 2.0}):
        model, em = _setup(steps=10, covariance=covariance, solver="cg", iterations=2, **kw)
        x0 = _x0(model, 16)
        a = em.sample_posterior(x0, _obs(), generator=torch.Generator().manual_seed(2))
        b = em.sample_posterior(x0, lam, generator=torch.Generator().manual_seed(2))
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- FA-APF
def test_fa_apf_with_the_interpolant_tracks_the_kalman_filter():
    """FA-APF ("gaussian" weights, no inflation) with the exact-velocity interpolant
    emulator, N = 1000, 10 steps of the D = 4, M = 2 model: means within 0.3 KF standard
    deviations, variances within 25 %, log-evidence within 1 nat of the Kalman filter
    (MC sd of a mean ≈ 0.03–0.05 sd at ESS 400–1000; of a variance ≈ sqrt(2/ESS) ≤ 0.07;
    EM with 64 steps adds ≈ 3 %)."""
    model = make_lg_model()
    K = 10
    truth = simulate_lg(model, K, seed=1)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(0.5), generator=torch.Generator().manual_seed(2)
    )
    m0 = torch.zeros(model.D, dtype=torch.float64)
    P0 = torch.eye(model.D, dtype=torch.float64)
    kf = KalmanFilter(model.A, model.b, model.Q).filter(m0, P0, obs)
    _, em = _setup(steps=64, mean_iterations=40)
    N = 1000
    x0 = m0 + torch.randn(
        N, model.D, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    run = assimilate(
        FAAPF(em, weights="gaussian", ess_interval=None, generator=1),
        x0,
        obs,
        truth=truth,
        progress=False,
    )
    sd = torch.sqrt(torch.diagonal(kf.covs, dim1=1, dim2=2))
    mean_err = ((run.means - kf.means).abs() / sd).max().item()
    var = torch.stack([torch.diagonal(torch.cov(p.T)) for p in run.particles])
    var_err = (var / sd**2 - 1).abs().max().item()
    ll_err = abs(run.log_evidence - kf.log_likelihood)
    print(
        f"FA-APF(interpolant) vs KF: mean {mean_err:.3f} sd, var {var_err:.3f}, loglik {ll_err:.3f}"
    )
    assert mean_err < 0.3
    assert var_err < 0.25
    assert ll_err < 1.0


# ---------------------------------------------------------------------------- training
D3 = 3


def _pairs(n, seed):
    g = torch.Generator().manual_seed(0)
    A = 0.9 * torch.linalg.qr(torch.randn(D3, D3, generator=g))[0]
    b = torch.tensor([1.0, -0.5, 0.3])
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, D3, generator=g)
    return x, x @ A.T + b + 0.3 * torch.randn(n, D3, generator=g), A, b


def _train(path, epochs, resume=False):
    from genfilter.emulators.interpolant import velocity_config
    from genfilter.emulators.training import TrainingConfig, train_emulator

    xp, xn, _, _ = _pairs(1024, 1)
    vp, vn, _, _ = _pairs(256, 2)
    config = TrainingConfig(epochs=epochs, batch_size=128, lr=2e-3, seed=0, checkpoint_every=2)
    return train_emulator(
        xp,
        xn,
        valid=(vp, vn),
        denoiser_config=velocity_config("mlp", (D3,), hidden=32, layers=2),
        config=config,
        out=path,
        resume=resume,
        progress=False,
        family="interpolant",
        interpolant=Interpolant("quadratic", 0.5),
        emulator_kwargs={"steps": 20},
    )


def test_training_round_trip_and_resume(tmp_path):
    """A few epochs of velocity regression on x' = A x + b + 0.3 ε: the validation loss
    falls; the checkpoint loads with weights_only=True and records its family, and
    load_emulator rebuilds a StochasticInterpolantEmulator with the same outputs; a run
    stopped after 2 epochs and resumed to 4 ends with bit-identical weights."""
    from genfilter.emulators.training import load_checkpoint, load_emulator, save_emulator

    full = _train(tmp_path / "full.pt", 4)
    assert isinstance(full.emulator, StochasticInterpolantEmulator)
    assert full.history["valid_loss"][-1] < 0.8 * full.history["valid_loss"][0]
    raw = torch.load(tmp_path / "full.pt", weights_only=True)
    assert raw["family"] == "interpolant" and raw["interpolant"] == {
        "beta": "quadratic",
        "epsilon": 0.5,
    }
    em = load_emulator(tmp_path / "full.pt", steps=20)
    assert isinstance(em, StochasticInterpolantEmulator) and em.interpolant.epsilon == 0.5
    x = _pairs(8, 3)[0]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(em.sample(x, generator=g()), full.emulator.sample(x, generator=g()))
    assert torch.equal(em.predict_mean(x), full.emulator.predict_mean(x))
    save_emulator(em, tmp_path / "saved.pt")
    again = load_emulator(tmp_path / "saved.pt", steps=20)
    assert torch.equal(again.predict_mean(x), em.predict_mean(x))
    assert load_checkpoint(tmp_path / "saved.pt")["train_state"] is None

    _train(tmp_path / "part.pt", 2)
    resumed = _train(tmp_path / "part.pt", 4, resume=True)
    for p, q in zip(resumed.emulator.parameters(), full.emulator.parameters()):
        assert torch.equal(p, q)
    assert resumed.history["valid_loss"] == full.history["valid_loss"]


def test_resume_refuses_another_family(tmp_path):
    from genfilter.emulators.networks import denoiser_config
    from genfilter.emulators.training import TrainingConfig, train_emulator

    _train(tmp_path / "a.pt", 2)
    xp, xn, _, _ = _pairs(256, 1)
    with pytest.raises(ValueError, match="family"):
        train_emulator(
            xp,
            xn,
            denoiser_config=denoiser_config("mlp", (D3,), hidden=32, layers=2),
            config=TrainingConfig(epochs=3, batch_size=128, seed=0),
            out=tmp_path / "a.pt",
            resume=True,
            progress=False,
        )


# ---------------------------------------------------------------------------- docs
def test_the_core_md_interpolant_example_runs_as_written_and_matches_kalman():
    """docs/core.md "Plug in your own interpolant": the code block, executed as written,
    gives FA-APF filtering means within 0.2 KF standard deviations of the Kalman filter on its
    scalar AR(1) model (N = 512 with Dirac weights; Dirac weights ignore HQHᵀ, which costs
    a little: measured 0.12 sd)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "core.md").read_text()
    section = text.split("## Plug in your own interpolant", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "docs/core.md", "exec"), scope)
    run = scope["run"]
    A, Q = torch.tensor([[0.9]], dtype=torch.float64), torch.tensor([[0.1]], dtype=torch.float64)
    ys = scope["obs"]
    kf = KalmanFilter(A, torch.zeros(1, dtype=torch.float64), Q).filter(
        torch.zeros(1, dtype=torch.float64), 1e-12 * torch.eye(1, dtype=torch.float64), ys
    )
    sd = torch.sqrt(kf.covs[:, 0, 0])
    err = ((run.means[:, 0].double() - kf.means[:, 0]).abs() / sd).max().item()
    print(f"core.md interpolant example: max |mean - KF| = {err:.3f} sd")
    assert err < 0.2


# ---------------------------------------------------------------------------- bad input
def _vel(s, x, c):
    return -c


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"diffusion": "follmer"}, "diffusion"),
        ({"diffusion": -1.0}, "diffusion"),
        ({"diffusion": 0.5}, "s_max"),  # g != sigma needs s_max < 1
        ({"s_max": 1.5}, "s_max"),
        ({"sigma_until": 1.0}, "sigma_until"),
        ({"mean_time": 0.0}, "mean_time"),  # beta = s^2 has beta'_0 = 0
        ({"mean_iterations": 0}, "mean_iterations"),
        ({"moments_time": 0.0}, "moments_time"),
        ({"covariance": "dense"}, "covariance"),
        ({"solver": "bicg"}, "solver"),
        ({"flowdas_samples": 0}, "flowdas_samples"),
        ({"flowdas_scale": -1.0}, "flowdas_scale"),
        ({"std": 0.0}, "std"),
        ({"mean": [1.0, 2.0]}, "mean"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_constructor_arguments_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StochasticInterpolantEmulator(_vel, (3,), **kwargs)


def test_bad_interpolants_and_calls_fail_fast():
    with pytest.raises(ValueError, match="beta"):
        Interpolant("cubic")
    with pytest.raises(ValueError, match="epsilon"):
        Interpolant(epsilon=0.0)

    class Broken(Interpolant):
        def coefficients(self, s):
            one = torch.ones_like(s)
            return 1 - s, s, 0.5 * one, -one, one, 0 * one  # sigma_1 = 0.5

    with pytest.raises(ValueError, match="sigma_1"):
        StochasticInterpolantEmulator(_vel, (3,), interpolant=Broken())
    with pytest.raises(TypeError, match="velocity"):
        StochasticInterpolantEmulator("b", (3,))
    with pytest.raises(TypeError, match="interpolant"):
        StochasticInterpolantEmulator(_vel, (3,), interpolant="quadratic")
    em = StochasticInterpolantEmulator(lambda s, x, c: x[:, :2], (3,), steps=2)
    with pytest.raises(ValueError, match="velocity must return"):
        em.sample(torch.zeros(4, 3))
    em = StochasticInterpolantEmulator(_vel, (3,), steps=2)
    with pytest.raises(ValueError, match="x_prev"):
        em.sample(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="obs"):
        em.sample_posterior(torch.zeros(4, 3), torch.zeros(2))


def test_training_rejects_bad_family_arguments():
    from genfilter.emulators.interpolant import velocity_config
    from genfilter.emulators.training import train_emulator

    xp, xn, _, _ = _pairs(16, 1)
    cfg = velocity_config("mlp", (D3,), hidden=8, layers=1)
    with pytest.raises(ValueError, match="family"):
        train_emulator(xp, xn, denoiser_config=cfg, family="flow", progress=False)
    with pytest.raises(ValueError, match="interpolant"):
        train_emulator(xp, xn, denoiser_config=cfg, interpolant=Interpolant(), progress=False)
    with pytest.raises(TypeError, match="interpolant"):
        train_emulator(
            xp, xn, denoiser_config=cfg, family="interpolant", interpolant="s2", progress=False
        )
