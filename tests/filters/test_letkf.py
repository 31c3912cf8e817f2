"""Properties of the ETKF and the LETKF (Hunt, Kostelich & Szunyogh 2007;
docs/method.md#etkf-and-letkf)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_lg_model, simulate_lg

from genfilter.emulators.simulator import SimulatorEmulator
from genfilter.filters.base import assimilate
from genfilter.filters.kalman import KalmanFilter
from genfilter.filters.letkf import (
    ETKF,
    LETKF,
    etkf_update,
    gaspari_cohn,
    grid_distances,
    letkf_update,
    mean_preserving_rotation,
)
from genfilter.observations import (
    Identity,
    Lambda,
    Mask,
    Observation,
    Select,
    diagonal_noise,
    full_noise,
    isotropic_noise,
    synthetic_observations,
)

f64 = torch.float64


class LinearEmulator:
    """Exact transition x' = A x + b + chol(Q) ξ (fast; no diffusion sampler)."""

    def __init__(self, A, b, Q):
        self.A, self.b, self.L = A, b, torch.linalg.cholesky(Q)
        self.state_shape = (A.shape[0],)

    def sample(self, x, *, generator=None):
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x @ self.A.T + self.b + xi @ self.L.T


class Persistence:
    """x' = x: the forecast is the input ensemble (isolates the analysis)."""

    def sample(self, x, *, generator=None):
        return x.clone()


def random_ensemble(N, shape, seed=0):
    """Members with spurious long-range correlations (a common random factor)."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(N, 1, generator=g, dtype=f64)
    x = torch.randn(N, math.prod(shape), generator=g, dtype=f64) + 2.0 * common
    return x.reshape(N, *shape)


def make_noise(kind, M, g):
    C = torch.randn(M, M, generator=g, dtype=f64)
    v = diagonal_noise(torch.rand(M, generator=g, dtype=f64) + 0.2)  # stored in default dtype
    noise, R = {
        "isotropic": (isotropic_noise(0.7), 0.49 * torch.eye(M, dtype=f64)),
        "diagonal": (v, torch.diag(v.D.double())),
        "full": (full_noise(C @ C.T + torch.eye(M, dtype=f64)), C @ C.T + torch.eye(M, dtype=f64)),
    }[kind]
    return noise, R


# --------------------------------------------------------------------------------------
# ETKF


def test_etkf_converges_to_the_kalman_filter():
    """Linear-Gaussian limit: N = 5000 on the D = 4, M = 2 model over 20 steps.

    Tolerances from the Monte-Carlo error: a sample mean has sd σ/√N and a sample
    covariance entry se_ij = √((P_ii P_jj + P_ij²)/N).  Over 40 seeds of this test the
    largest mean error was 6.8 σ/√N (rms 1.3: errors in the gain multiply O(1)
    innovations and accumulate) and the largest covariance error 3.0 se (rms 0.5: the
    square root adds no sampling noise).  Bounds: 8 σ/√N (≈ 0.11 σ) and 4 se."""
    model = make_lg_model()
    truth = simulate_lg(model, 20)
    obs = synthetic_observations(
        truth, Select([0, 2]), isotropic_noise(0.5), generator=torch.Generator().manual_seed(2)
    )
    m0, P0 = torch.zeros(4, dtype=f64), torch.eye(4, dtype=f64)
    kf = KalmanFilter(model.A, model.b, model.Q).filter(m0, P0, obs)
    N = 5000
    x0 = torch.randn(N, 4, generator=torch.Generator().manual_seed(3), dtype=f64)
    run = assimilate(
        ETKF(LinearEmulator(model.A, model.b, model.Q), generator=4), x0, obs, progress=False
    )
    P = kf.covs
    var = P.diagonal(dim1=1, dim2=2)
    z_mean = (run.means - kf.means).abs() / (var / N).sqrt()
    covs = torch.stack([torch.cov(p.T) for p in run.particles])
    se = ((var[:, :, None] * var[:, None, :] + P**2) / N).sqrt()
    z_cov = (covs - P).abs() / se
    print(
        f"ETKF vs KF: max mean err {z_mean.max():.2f} sd/sqrt(N), max cov err {z_cov.max():.2f} se"
    )
    assert z_mean.max() < 8.0
    assert z_cov.max() < 4.0


@pytest.mark.parametrize("noise_kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("inflation", [1.0, 1.3])
@pytest.mark.parametrize("low_rank", [False, True])
@pytest.mark.parametrize("N", [5, 12])
def test_etkf_analysis_is_the_kalman_update_of_the_ensemble(noise_kind, inflation, low_rank, N):
    """One analysis, D = 6, M = 3, linear H (N = 5 < D: rank-deficient P^f): the analysis
    mean is x̄ + K (y − ȳ) with K = A Ỹᵀ (Ỹ Ỹᵀ + R)⁻¹ formed densely (the EnKF's
    deterministic part) and the analysis sample covariance is exactly (I − K H) P^f,
    P^f = ρ A Aᵀ; both decompositions of the N×N matrix (dense eigh, low rank)."""
    g = torch.Generator().manual_seed(N)
    D, idx = 6, [0, 2, 5]
    M = len(idx)
    xf = random_ensemble(N, (D,), seed=N)
    noise, R = make_noise(noise_kind, M, g)
    obs = Observation(torch.randn(M, generator=g, dtype=f64) + 3.0, Select(idx), noise)
    xa = etkf_update(xf, obs, inflation, low_rank=low_rank)

    H = torch.zeros(M, D, dtype=f64)
    H[range(M), idx] = 1.0
    A = math.sqrt(inflation) * (xf - xf.mean(0)).T / math.sqrt(N - 1)  # (D, N)
    Yt = H @ A
    K = A @ Yt.T @ torch.linalg.inv(Yt @ Yt.T + R)
    mean = xf.mean(0) + K @ (obs.y - xf[:, idx].mean(0))
    cov = (torch.eye(D, dtype=f64) - K @ H) @ A @ A.T
    assert torch.allclose(xa.mean(0), mean, atol=1e-10, rtol=0)
    assert torch.allclose(torch.cov(xa.T), cov, atol=1e-10, rtol=0)


def test_etkf_keeps_dtype_and_shape_of_fields():
    xf = random_ensemble(7, (3, 4)).float()
    obs = Observation(torch.zeros(12), Identity(), isotropic_noise(1.0))
    xa = etkf_update(xf, obs)
    assert xa.shape == xf.shape and xa.dtype == torch.float32


# --------------------------------------------------------------------------------------
# Gaspari–Cohn and distances


def test_gaspari_cohn_matches_the_polynomial():
    """ρ(0) = 1, ρ = 0 from z = 2 on, continuous (value and slope) at z = 1 and z = 2,
    decreasing, and equal to the polynomial of Gaspari & Cohn (1999, eq. 4.10)."""
    z = torch.linspace(0.0, 3.0, 3001, dtype=f64)
    ref = torch.where(
        z <= 1,
        -(z**5) / 4 + z**4 / 2 + 5 * z**3 / 8 - 5 * z**2 / 3 + 1,
        torch.where(
            z <= 2,
            z**5 / 12
            - z**4 / 2
            + 5 * z**3 / 8
            + 5 * z**2 / 3
            - 5 * z
            + 4
            - 2 / (3 * z.clamp_min(1.0)),
            torch.zeros_like(z),
        ),
    )
    rho = gaspari_cohn(z)
    assert torch.allclose(rho, ref, atol=1e-12, rtol=0)
    assert float(gaspari_cohn(0.0)) == 1.0
    assert (gaspari_cohn(torch.tensor([2.0, 2.5, 10.0, math.inf], dtype=f64)) == 0).all()
    assert (rho[1:] <= rho[:-1] + 1e-15).all() and (rho >= 0).all()
    h = 1e-7
    for knot in (1.0, 2.0):
        left, mid, right = gaspari_cohn(torch.tensor([knot - h, knot, knot + h], dtype=f64))
        assert abs(float(left - mid)) < 1e-6 and abs(float(right - mid)) < 1e-6
        slope_l, slope_r = (mid - left) / h, (right - mid) / h
        assert abs(float(slope_l - slope_r)) < 1e-5
    assert torch.equal(gaspari_cohn(-z), rho)


def test_grid_distances_use_the_minimum_image_per_axis():
    pts = torch.tensor([[0.0, 0.0], [7.0, 9.0], [4.0, 5.0]], dtype=f64)
    loc = torch.tensor([[0.0, 0.0]], dtype=f64)
    d = grid_distances(pts, loc, (8, 10))[:, 0]
    assert torch.allclose(d, torch.tensor([0.0, math.sqrt(2), math.sqrt(41)], dtype=f64))
    d_open = grid_distances(pts, loc, (0, 0))[:, 0]
    assert torch.allclose(d_open[1], torch.tensor(math.sqrt(49 + 81), dtype=f64))
    d_mixed = grid_distances(pts, loc, (8, 0))[:, 0]  # periodic in rows only
    assert torch.allclose(d_mixed[1], torch.tensor(math.sqrt(1 + 81), dtype=f64))


# --------------------------------------------------------------------------------------
# LETKF


@pytest.mark.parametrize("observed", ["all", "few"])
@pytest.mark.parametrize("rotate", [False, True])
def test_letkf_with_infinite_radius_is_the_etkf(observed, rotate):
    """radius = inf gives every observation weight 1 at every point: LETKF = ETKF for the
    same forecast and generator, to 1e-10 (M > N: dense path; M < N: low-rank path)."""
    model = make_lg_model(D=10)
    em = LinearEmulator(model.A, model.b, model.Q)
    idx = list(range(10)) if observed == "all" else [1, 6]
    N = 6 if observed == "all" else 12
    truth = simulate_lg(model, 3)
    obs = synthetic_observations(
        truth, Select(idx), isotropic_noise(0.8), generator=torch.Generator().manual_seed(1)
    )
    x0 = random_ensemble(N, (10,))
    e_g = assimilate(ETKF(em, inflation=1.2, rotate=rotate, generator=7), x0, obs, progress=False)
    e_l = assimilate(
        LETKF(em, radius=math.inf, inflation=1.2, rotate=rotate, generator=7),
        x0,
        obs,
        progress=False,
    )
    assert torch.allclose(e_l.particles, e_g.particles, atol=1e-10, rtol=0)
    assert e_l.infos[0].extra["local_observations"] == len(idx)


def test_letkf_1d_periodic_neighbours():
    """One observation at index 0 of a periodic 40-point grid, radius 2 (support 4): exactly
    the points at periodic distance < 4 (37, 38, 39, 0, 1, 2, 3) change; D/2 and the rest keep
    their background values.  Without periodicity index 39 is far and unchanged."""
    D, N = 40, 10
    xf = random_ensemble(N, (D,))
    obs = Observation(torch.tensor([5.0], dtype=f64), Select([0]), isotropic_noise(0.5))
    near = {37, 38, 39, 0, 1, 2, 3}
    for periodic, expected in ((True, near), ((40,), near), (False, {0, 1, 2, 3})):
        f = LETKF(Persistence(), radius=2.0, periodic=periodic, generator=0)
        ens, _ = f.step(f.init(xf), obs)
        changed = (ens.particles - xf).abs().amax(0) > 1e-12
        assert set(changed.nonzero().flatten().tolist()) == expected, periodic
        assert torch.allclose(ens.particles[:, D // 2], xf[:, D // 2], atol=1e-12, rtol=0)


def test_letkf_2d_fields_use_2d_periodic_distances():
    """A field (8, 10) observed at the corner (0, 0), radius 1.5 (support 3): the opposite
    corner (7, 9) and (7, 0) — 1 cell away through the wrap, but 10 apart in the flattened
    index — are updated; the centre (4, 5) and (0, 5) are not.  The updated set is exactly
    {p : d_2D(p, (0, 0)) < 3}."""
    H, W, N = 8, 10, 8
    xf = random_ensemble(N, (H, W), seed=3)
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[0, 0] = True
    obs = Observation(torch.tensor([4.0], dtype=f64), Mask(mask), isotropic_noise(0.5))
    f = LETKF(Persistence(), radius=1.5, generator=0)
    ens, _ = f.step(f.init(xf), obs)
    changed = (ens.particles - xf).abs().amax(0) > 1e-12
    for p in [(0, 0), (7, 9), (7, 0), (1, 0), (0, 9), (6, 0)]:
        assert changed[p], p
    for p in [(4, 5), (0, 5), (5, 0), (0, 7)]:
        assert not changed[p], p
    rows = torch.arange(H, dtype=f64)[:, None].expand(H, W)
    cols = torch.arange(W, dtype=f64)[None, :].expand(H, W)
    dr, dc = torch.minimum(rows, H - rows), torch.minimum(cols, W - cols)
    assert torch.equal(changed, (dr**2 + dc**2).sqrt() < 3.0)
    # no wrap-around: the opposite corner is far
    f_open = LETKF(Persistence(), radius=1.5, periodic=False, generator=0)
    ens_open, _ = f_open.step(f_open.init(xf), obs)
    assert torch.allclose(ens_open.particles[:, 7, 9], xf[:, 7, 9], atol=1e-12, rtol=0)


def test_r_localisation_divides_the_noise_variance_by_the_gc_weight():
    """With one observation at distance d from point j, the local analysis of j equals the
    global ETKF with Σ_y / ρ_GC(d/c) (R-localisation, Hunt et al. 2007)."""
    D, N, c = 30, 9, 3.0
    xf = random_ensemble(N, (D,), seed=4)
    obs = Observation(torch.tensor([2.0], dtype=f64), Select([10]), isotropic_noise(0.6))
    xa, _ = letkf_update(xf, obs, radius=c, inflation=1.1)
    for j in [10, 11, 13, 15, 5]:
        w = float(gaspari_cohn(torch.tensor(abs(j - 10) / c, dtype=f64)))
        inflated = Observation(obs.y, obs.operator, isotropic_noise(0.6 / math.sqrt(w)))
        ref = etkf_update(xf, inflated, 1.1)
        assert torch.allclose(xa[:, j], ref[:, j], atol=1e-10, rtol=0), j


def test_zero_weight_observations_are_dropped():
    """An observation beyond 2c has no effect, whatever its value."""
    D, N = 30, 8
    xf = random_ensemble(N, (D,), seed=5)
    near = Observation(torch.tensor([1.0], dtype=f64), Select([3]), isotropic_noise(0.5))
    both = Observation(torch.tensor([1.0, 1e6], dtype=f64), Select([3, 18]), isotropic_noise(0.5))
    xa1, _ = letkf_update(xf, near, radius=2.0)
    xa2, _ = letkf_update(xf, both, radius=2.0)
    assert torch.allclose(xa1[:, :12], xa2[:, :12], atol=1e-12, rtol=0)


def test_chunking_does_not_change_the_analysis():
    xf = random_ensemble(7, (6, 8), seed=6)
    obs = Observation(
        torch.randn(48, generator=torch.Generator().manual_seed(0), dtype=f64),
        Identity(),
        diagonal_noise(torch.full((48,), 0.3, dtype=f64)),
    )
    ref, n = letkf_update(xf, obs, radius=1.2, inflation=1.05)
    for chunk in (1, 5, 1000):
        xa, _ = letkf_update(xf, obs, radius=1.2, inflation=1.05, chunk_size=chunk)
        assert torch.allclose(xa, ref, atol=1e-12, rtol=0)
    assert 1 < n < 48
    # blocks of points without any observation within 2c (K = 0)
    one = Observation(torch.tensor([3.0], dtype=f64), Select([0]), isotropic_noise(1.0))
    ref, _ = letkf_update(xf, one, radius=1.0, inflation=1.2)
    for chunk in (1, 3):
        xa, _ = letkf_update(xf, one, radius=1.0, inflation=1.2, chunk_size=chunk)
        assert torch.allclose(xa, ref, atol=1e-12, rtol=0)


def test_points_without_local_observations_are_only_inflated():
    """Far from every observation the local problem has no data: the anomalies are scaled by
    √ρ and the mean is kept (Hunt et al. 2007: prior inflation acts everywhere)."""
    xf = random_ensemble(6, (40,), seed=9)
    obs = Observation(torch.tensor([3.0], dtype=f64), Select([0]), isotropic_noise(1.0))
    xa, _ = letkf_update(xf, obs, radius=2.0, inflation=1.44)
    far = slice(5, 35)
    assert torch.allclose(xa[:, far].mean(0), xf[:, far].mean(0), atol=1e-12, rtol=0)
    assert torch.allclose(
        xa[:, far] - xa[:, far].mean(0), 1.2 * (xf[:, far] - xf[:, far].mean(0)), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize(
    "make", [lambda em: ETKF(em, generator=0), lambda em: LETKF(em, radius=3.0, generator=0)]
)
def test_missing_values_and_forecast_steps(make):
    """NaN entries are dropped (same result as not observing them); obs None and an
    all-missing observation give the forecast; StepInfo reports the spreads."""
    xf = random_ensemble(8, (12,), seed=7)
    y = torch.tensor([1.0, float("nan"), -1.0, float("nan")], dtype=f64)
    f = make(Persistence())
    with_nan, info = f.step(f.init(xf), Observation(y, Select([0, 3, 6, 9]), isotropic_noise(1.0)))
    without, _ = f.step(f.init(xf), Observation(y[[0, 2]], Select([0, 6]), isotropic_noise(1.0)))
    assert torch.allclose(with_nan.particles, without.particles, atol=1e-12, rtol=0)
    assert info.ess == 8.0 and with_nan.is_uniform()
    assert info.spread_analysis < info.spread_forecast
    for obs in (
        None,
        Observation(
            torch.full((2,), float("nan"), dtype=f64), Select([0, 1]), isotropic_noise(1.0)
        ),
    ):
        ens, info = f.step(f.init(xf), obs)
        assert torch.equal(ens.particles, xf)
        assert info.spread_analysis == info.spread_forecast


# --------------------------------------------------------------------------------------
# Random rotation


def test_rotation_preserves_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 20):
        Q = mean_preserving_rotation(n, g)
        assert torch.allclose(Q.T @ Q, torch.eye(n, dtype=f64), atol=1e-12)
        assert torch.allclose(Q @ torch.ones(n, dtype=f64), torch.ones(n, dtype=f64), atol=1e-12)
    # in the filter: same forecast, same analysis moments, different members
    xf = random_ensemble(10, (15,), seed=8)
    obs = Observation(torch.zeros(5, dtype=f64), Select([0, 3, 6, 9, 12]), isotropic_noise(1.0))
    for make in (
        lambda r: ETKF(Persistence(), rotate=r, generator=1),
        lambda r: LETKF(Persistence(), radius=2.0, rotate=r, generator=1),
    ):
        plain, _ = make(False).step(make(False).init(xf), obs)
        rotated, _ = make(True).step(make(True).init(xf), obs)
        assert torch.allclose(rotated.particles.mean(0), plain.particles.mean(0), atol=1e-12)
        assert torch.allclose(
            torch.cov(rotated.particles.T), torch.cov(plain.particles.T), atol=1e-12
        )
        assert (rotated.particles - plain.particles).abs().max() > 1e-3


# --------------------------------------------------------------------------------------
# Hyperparameters


def test_bad_hyperparameters_name_the_argument():
    em = Persistence()
    for bad in (0.9, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="inflation"):
            ETKF(em, inflation=bad)
        with pytest.raises(ValueError, match="inflation"):
            LETKF(em, radius=2.0, inflation=bad)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="radius"):
            LETKF(em, radius=bad)
    with pytest.raises(TypeError, match="radius"):
        LETKF(em, radius="far")
    with pytest.raises(ValueError, match="periodic"):
        LETKF(em, radius=2.0, periodic=(40, -1))
    with pytest.raises(TypeError, match="periodic"):
        LETKF(em, radius=2.0, periodic="yes")
    with pytest.raises(ValueError, match="distance"):
        LETKF(em, radius=2.0, distance="haversine")
    with pytest.raises(ValueError, match="chunk_size"):
        LETKF(em, radius=2.0, chunk_size=0)
    with pytest.raises(TypeError, match="rotate"):
        ETKF(em, rotate="yes")
    with pytest.raises(TypeError, match="sample"):
        LETKF(object(), radius=2.0)
    xf = random_ensemble(5, (10,))
    obs = Observation(torch.zeros(1, dtype=f64), Select([0]), isotropic_noise(1.0))
    f = LETKF(em, radius=2.0, periodic=(10, 10), generator=0)
    with pytest.raises(ValueError, match="periodic"):  # one length per state axis
        f.step(f.init(xf), obs)
    f = LETKF(em, radius=2.0, generator=0)
    no_locations = Observation(
        torch.zeros(1, dtype=f64), Lambda(lambda x: x[:, :1], "first"), isotropic_noise(1.0)
    )
    with pytest.raises(ValueError, match="locations"):
        f.step(f.init(xf), no_locations)


# --------------------------------------------------------------------------------------
# Chaotic benchmarks


def test_letkf_on_lorenz96_beats_climatology():
    """The standard twin experiment (Lorenz-96, D = 40, F = 8, all observed with noise std 1
    every 0.05, true model, N = 20, ρ = 1.05, radius 4): analysis RMSE after 20 spin-up
    cycles far below the climatological sd (≈ 3.5; measured 0.25 over 100 cycles; ≈ 0.2 in
    the literature with tuned parameters and long runs)."""
    from genfilter.systems.lorenz96 import Lorenz96

    system = Lorenz96()
    g = torch.Generator().manual_seed(0)
    x0 = system.attractor_states(1, g, dtype=f64)
    truth = system.trajectory(x0, 100, g)[1:, 0]
    obs = synthetic_observations(truth, Identity(), isotropic_noise(1.0), generator=g)
    ens0 = system.attractor_states(20, torch.Generator().manual_seed(5), dtype=f64)
    f = LETKF(SimulatorEmulator(system), radius=4.0, inflation=1.05, generator=1)
    run = assimilate(f, ens0, obs, progress=False)
    rmse = (run.means - truth).pow(2).mean(1).sqrt()[20:].mean()
    climatology = truth.std(0).mean()
    print(f"L96 LETKF: RMSE {rmse:.3f}, climatological sd {climatology:.2f}")
    assert climatology > 3.0
    assert rmse < 0.5


@pytest.mark.slow
def test_rotation_repairs_the_etkf_on_lorenz63():
    """Known ETKF weakness (docs/baselines.md): deterministic Lorenz-63 (dt 0.01, all observed,
    R = 2 I, every 0.25), N = 50, no inflation, 600 cycles: without rotation the ETKF RMSE is
    0.8–1.1, with the random rotation ≈ 0.55 (DAPPER's value; the perturbed-observation EnKF
    scores ≈ 0.55)."""

    def drift(x):
        a, b, c = x.unbind(-1)
        return torch.stack((10 * (b - a), a * (28 - c) - b, a * b - 8 / 3 * c), -1)

    class Lorenz63:
        def sample(self, x, *, generator=None):
            h = 0.01
            for _ in range(25):
                k1 = drift(x)
                k2 = drift(x + h / 2 * k1)
                k3 = drift(x + h / 2 * k2)
                k4 = drift(x + h * k3)
                x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            return x

    em = Lorenz63()
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[1.0, 1.0, 20.0]], dtype=f64)
    for _ in range(40):
        x = em.sample(x)
    truth = []
    for _ in range(600):
        x = em.sample(x)
        truth.append(x[0])
    truth = torch.stack(truth)
    obs = synthetic_observations(truth, Identity(), isotropic_noise(math.sqrt(2.0)), generator=g)
    ens0 = truth[0] + 3.0 * torch.randn(50, 3, generator=g, dtype=f64)
    rmse = {}
    for rotate in (False, True):
        run = assimilate(ETKF(em, rotate=rotate, generator=1), ens0, obs, progress=False)
        rmse[rotate] = float((run.means - truth).pow(2).mean(1).sqrt()[100:].mean())
    print(f"L63 ETKF RMSE: plain {rmse[False]:.3f}, rotated {rmse[True]:.3f}")
    assert rmse[True] < 0.65
    assert rmse[True] < 0.85 * rmse[False]
