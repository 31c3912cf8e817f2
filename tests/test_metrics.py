"""Properties of genfilter.metrics (docs/method.md#metrics): skill, spread, SSR, CRPS, energy
score, ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scoringrules as sr
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from genfilter.metrics import (
    crps,
    energy_score,
    ensemble_mean,
    rank,
    rank_histogram,
    skill,
    spread,
    ssr,
    step_metrics,
    summarize,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_log_weights(n: int, seed: int) -> torch.Tensor:
    lw = 2.0 * torch.randn(n, generator=_gen(seed), dtype=torch.float64)
    return lw - torch.logsumexp(lw, 0)


def _naive_crps(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, fair=False):
    """O(N^2) double-sum reference, per component: x (N, *S), y (*S), w (N,) or None."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    pair = (x[:, None] - x[None, :]).abs()  # (N, N, *S)
    if w is None:
        term1 = (x - y).abs().mean(0)
        return term1 - pair.sum((0, 1)) / (2 * n * (n - 1) if fair else 2 * n * n)
    shape = (n,) + (1,) * (x.ndim - 1)
    wi, wj = w.reshape(shape)[:, None], w.reshape(shape)[None, :]
    return ((x - y).abs() * w.reshape(shape)).sum(0) - 0.5 * (wi * wj * pair).sum((0, 1))


# --------------------------------------------------------------------------------------------
# Hand-computed values (formulas of docs/method.md#metrics evaluated on paper)
# --------------------------------------------------------------------------------------------


def test_hand_computed_uniform_1d():
    # members 1, 2, 6; truth 2. mean 3 -> skill |3 - 2| = 1.
    # deviations -2, -1, 3 -> (4 + 1 + 9) / (3 - 1) = 7 -> spread sqrt(7).
    # CRPS: (1 + 0 + 4)/3 = 5/3; sum_ij |x_i - x_j| = 2 (1 + 5 + 4) = 20;
    #   energy form 5/3 - 20/18 = 5/9; fair form 5/3 - 20/12 = 0.
    x = torch.tensor([[1.0], [2.0], [6.0]])
    y = torch.tensor([2.0])
    assert float(skill(x, y)) == pytest.approx(1.0, abs=1e-14)
    assert float(spread(x)) == pytest.approx(math.sqrt(7.0), abs=1e-14)
    assert float(ssr(x, y)) == pytest.approx(math.sqrt(7.0), abs=1e-14)
    assert float(ssr(x, y, fortin=True)) == pytest.approx(math.sqrt(7.0 * 4 / 3), abs=1e-14)
    assert float(crps(x, y)) == pytest.approx(5 / 9, abs=1e-14)
    assert float(crps(x, y, fair=True)) == pytest.approx(0.0, abs=1e-14)
    assert float(energy_score(x, y)) == pytest.approx(5 / 9, abs=1e-14)


def test_hand_computed_state_of_two_components():
    # members (0,0), (2,2), (4,-2); truth (0,3): mean (2,0), error (2,-3)
    # skill sqrt((4 + 9)/2); per variable (2, 3).
    # variances: comp 0: (4 + 0 + 4)/2 = 4; comp 1: (0 + 4 + 4)/2 = 4 -> spread 2.
    x = torch.tensor([[0.0, 0.0], [2.0, 2.0], [4.0, -2.0]])
    y = torch.tensor([0.0, 3.0])
    torch.testing.assert_close(ensemble_mean(x), torch.tensor([2.0, 0.0], dtype=torch.float64))
    assert float(skill(x, y)) == pytest.approx(math.sqrt(6.5), abs=1e-14)
    torch.testing.assert_close(
        skill(x, y, variable_axis=0), torch.tensor([2.0, 3.0], dtype=torch.float64)
    )
    assert float(spread(x)) == pytest.approx(2.0, abs=1e-14)
    torch.testing.assert_close(
        ssr(x, y, variable_axis=0), torch.tensor([1.0, 2 / 3], dtype=torch.float64)
    )


def test_hand_computed_weighted():
    # members 0, 2, 4 with weights 1/2, 1/4, 1/4; truth 1.
    # mean 1.5 -> skill 0.5.
    # sum w (x - mean)^2 = .5*2.25 + .25*.25 + .25*6.25 = 2.75; 1 - sum w^2 = 0.625 -> var 4.4.
    # CRPS: sum w |x - y| = .5 + .25 + .75 = 1.5;
    #   sum_ij w_i w_j |x_i - x_j| = 2 (.125*2 + .125*4 + .0625*2) = 1.75 -> 1.5 - 0.875 = 0.625.
    x = torch.tensor([[0.0], [2.0], [4.0]])
    y = torch.tensor([1.0])
    lw = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).log()
    assert float(ensemble_mean(x, lw)) == pytest.approx(1.5, abs=1e-14)
    assert float(skill(x, y, lw)) == pytest.approx(0.5, abs=1e-14)
    assert float(spread(x, lw)) == pytest.approx(math.sqrt(4.4), abs=1e-14)
    assert float(crps(x, y, lw)) == pytest.approx(0.625, abs=1e-14)
    assert float(energy_score(x, y, lw)) == pytest.approx(0.625, abs=1e-14)


# --------------------------------------------------------------------------------------------
# CRPS: agreement with scoringrules and with the O(N^2) definition
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fair", "estimator"), [(False, "nrg"), (True, "fair")])
def test_crps_matches_scoringrules(fair, estimator):
    n, m = 17, 40
    x = 3.0 * torch.randn(n, m, generator=_gen(0), dtype=torch.float64) + 1.0
    y = torch.randn(m, generator=_gen(1), dtype=torch.float64)
    ours = crps(x, y, fair=fair, variable_axis=0)  # state (M,): one value per component
    ref = sr.crps_ensemble(y.numpy(), x.T.numpy(), estimator=estimator, backend="numpy")
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-10)
    assert float(crps(x, y, fair=fair)) == pytest.approx(float(np.mean(ref)), abs=1e-10)


def test_weighted_crps_matches_scoringrules():
    n, m = 13, 30
    x = torch.randn(n, m, generator=_gen(2), dtype=torch.float64)
    y = torch.randn(m, generator=_gen(3), dtype=torch.float64)
    lw = _random_log_weights(n, 4)
    w = np.tile(lw.exp().numpy(), (m, 1))  # scoringrules: weights shaped like the forecast
    ref = sr.crps_ensemble(y.numpy(), x.T.numpy(), ens_w=w, estimator="nrg", backend="numpy")
    np.testing.assert_allclose(crps(x, y, lw, variable_axis=0).numpy(), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("weighted", "fair"), [(False, False), (False, True), (True, False)])
def test_sorted_crps_equals_double_sum(weighted, fair):
    n = 11
    x = torch.randn(n, 3, 4, generator=_gen(5), dtype=torch.float64)
    x[3] = x[7]  # ties
    y = torch.randn(3, 4, generator=_gen(6), dtype=torch.float64)
    lw = _random_log_weights(n, 7) if weighted else None
    ref = _naive_crps(x, y, lw.exp() if weighted else None, fair=fair)
    torch.testing.assert_close(crps(x, y, lw, fair=fair), ref.mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        crps(x, y, lw, fair=fair, variable_axis=1), ref.mean(dim=0), rtol=0, atol=1e-12
    )


@settings(max_examples=60, deadline=None)
@given(
    members=st.lists(st.integers(-4, 4), min_size=2, max_size=9),
    truth=st.integers(-5, 5),
    raw_weights=st.lists(st.floats(0.01, 10.0), min_size=9, max_size=9),
)
def test_sorted_crps_equals_double_sum_with_ties(members, truth, raw_weights):
    # small integer members: many ties, the case where a sort-based formula is easiest to get wrong
    x = torch.tensor(members, dtype=torch.float64)[:, None]
    y = torch.tensor([float(truth)], dtype=torch.float64)
    w = torch.tensor(raw_weights[: len(members)], dtype=torch.float64)
    w = w / w.sum()
    assert float(crps(x, y)) == pytest.approx(float(_naive_crps(x, y, None).mean()), abs=1e-12)
    assert float(crps(x, y, fair=True)) == pytest.approx(
        float(_naive_crps(x, y, None, fair=True).mean()), abs=1e-12
    )
    assert float(crps(x, y, w.log())) == pytest.approx(
        float(_naive_crps(x, y, w).mean()), abs=1e-12
    )


def test_crps_scales_to_ensembles_where_a_pair_matrix_cannot_exist():
    # N = 200k: an N x N matrix would need 320 GB; the sort-based form takes milliseconds.
    n = 200_000
    x = torch.randn(n, 2, generator=_gen(8), dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.float64)
    # CRPS of N(0,1) at 0: E|X| - E|X - X'|/2 = sqrt(2/pi) - 1/sqrt(pi)
    expected = math.sqrt(2 / math.pi) - 1 / math.sqrt(math.pi)
    assert float(crps(x, y)) == pytest.approx(expected, abs=5e-3)
    lw = torch.full((n,), -math.log(n), dtype=torch.float64)
    assert float(crps(x, y, lw)) == pytest.approx(float(crps(x, y)), abs=1e-9)


def test_crps_nonnegative_and_zero_only_for_point_mass_at_truth():
    x = torch.randn(20, 50, generator=_gen(9), dtype=torch.float64)
    y = torch.randn(50, generator=_gen(10), dtype=torch.float64)
    assert (crps(x, y, variable_axis=0) >= 0).all()
    point = y.expand(5, 50).clone()
    assert float(crps(point, y)) == 0.0


# --------------------------------------------------------------------------------------------
# Energy score
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
def test_energy_score_matches_scoringrules(weighted):
    n, shape = 23, (3, 5)
    x = torch.randn(n, *shape, generator=_gen(11), dtype=torch.float64)
    y = torch.randn(*shape, generator=_gen(12), dtype=torch.float64)
    lw = _random_log_weights(n, 13) if weighted else None
    ens_w = lw.exp().numpy() if weighted else None
    ref = sr.es_ensemble(
        y.reshape(-1).numpy(),
        x.reshape(n, -1).numpy(),
        ens_w=ens_w,
        estimator="nrg",
        backend="numpy",
    )
    assert float(energy_score(x, y, lw)) == pytest.approx(float(ref), abs=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
def test_energy_score_chunking_does_not_change_the_value(weighted):
    n = 50
    x = torch.randn(n, 4, generator=_gen(14), dtype=torch.float64)
    y = torch.randn(4, generator=_gen(15), dtype=torch.float64)
    lw = _random_log_weights(n, 16) if weighted else None
    whole = energy_score(x, y, lw, chunk_size=n)
    for chunk in (1, 7, 49):
        torch.testing.assert_close(
            energy_score(x, y, lw, chunk_size=chunk), whole, rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("weighted", [False, True])
def test_energy_score_in_one_dimension_is_crps(weighted):
    n = 31
    x = torch.randn(n, 1, generator=_gen(17), dtype=torch.float64)
    y = torch.tensor([0.3], dtype=torch.float64)
    lw = _random_log_weights(n, 18) if weighted else None
    torch.testing.assert_close(energy_score(x, y, lw), crps(x, y, lw), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Weighted ensembles
# --------------------------------------------------------------------------------------------


def test_uniform_log_weights_equal_unweighted():
    n = 9
    x = torch.randn(n, 2, 3, generator=_gen(19), dtype=torch.float64)
    y = torch.randn(2, 3, generator=_gen(20), dtype=torch.float64)
    lw = torch.full((n,), -math.log(n), dtype=torch.float64)
    close = dict(rtol=0, atol=1e-12)
    torch.testing.assert_close(ensemble_mean(x, lw), ensemble_mean(x), **close)
    for axis in (None, 1):
        torch.testing.assert_close(
            skill(x, y, lw, variable_axis=axis), skill(x, y, variable_axis=axis), **close
        )
        torch.testing.assert_close(
            spread(x, lw, variable_axis=axis), spread(x, variable_axis=axis), **close
        )
        torch.testing.assert_close(
            ssr(x, y, lw, variable_axis=axis), ssr(x, y, variable_axis=axis), **close
        )
        torch.testing.assert_close(
            crps(x, y, lw, variable_axis=axis), crps(x, y, variable_axis=axis), **close
        )
    torch.testing.assert_close(energy_score(x, y, lw), energy_score(x, y), **close)


def test_weights_concentrated_on_one_member():
    n, j = 6, 4
    x = torch.randn(n, 5, generator=_gen(21), dtype=torch.float64)
    y = torch.randn(5, generator=_gen(22), dtype=torch.float64)
    lw = torch.full((n,), -math.inf, dtype=torch.float64)
    lw[j] = 0.0
    err = x[j] - y
    torch.testing.assert_close(ensemble_mean(x, lw), x[j])
    assert float(skill(x, y, lw)) == pytest.approx(float(err.pow(2).mean().sqrt()), abs=1e-14)
    torch.testing.assert_close(skill(x, y, lw, variable_axis=0), err.abs())
    assert float(spread(x, lw)) == 0.0
    assert float(crps(x, y, lw)) == pytest.approx(float(err.abs().mean()), abs=1e-14)
    assert float(energy_score(x, y, lw)) == pytest.approx(float(err.norm()), abs=1e-14)


def test_nearly_collapsed_weights_give_finite_spread():
    # w = (1 - 1e-20, 1e-20): 1 - sum w^2 underflows to 0 if computed naively
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    lw = torch.tensor([0.0, -46.0, -math.inf], dtype=torch.float64)
    w2 = math.exp(-46.0)
    # reliability-weighted variance: w1 w2 (x2 - x1)^2 / (2 w1 w2) ~ 1/2
    assert float(spread(x, lw)) == pytest.approx(math.sqrt(0.5), rel=1e-6)
    assert w2 < 1e-16  # the regime where 1 - w1 is lost in float64


def test_log_weights_are_renormalised():
    x = torch.randn(5, 3, generator=_gen(23), dtype=torch.float64)
    y = torch.randn(3, generator=_gen(24), dtype=torch.float64)
    lw = _random_log_weights(5, 25)
    torch.testing.assert_close(crps(x, y, lw + 3.0), crps(x, y, lw))
    torch.testing.assert_close(spread(x, lw - 2.0), spread(x, lw))


# --------------------------------------------------------------------------------------------
# Per-variable values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_variable_axis_is_consistent_with_the_total(axis):
    shape = (3, 4, 5)
    x = torch.randn(8, *shape, generator=_gen(26), dtype=torch.float64)
    y = torch.randn(*shape, generator=_gen(27), dtype=torch.float64)
    per_skill = skill(x, y, variable_axis=axis)
    assert per_skill.shape == (shape[axis],)
    torch.testing.assert_close(per_skill.pow(2).mean(), skill(x, y).pow(2))
    torch.testing.assert_close(spread(x, variable_axis=axis).pow(2).mean(), spread(x).pow(2))
    torch.testing.assert_close(crps(x, y, variable_axis=axis).mean(), crps(x, y))


def test_variable_axis_selects_the_named_axis():
    # channel 1 of a (C, H, W) field is off by 2 everywhere, the others are exact
    x = torch.zeros(4, 3, 2, 2, dtype=torch.float64)
    x[:, 1] = 2.0
    y = torch.zeros(3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(
        skill(x, y, variable_axis=0), torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        crps(x, y, variable_axis=0), torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64)
    )


def test_lorenz_state_per_component_skill_is_absolute_error():
    x = torch.randn(10, 3, generator=_gen(28), dtype=torch.float64)
    y = torch.randn(3, generator=_gen(29), dtype=torch.float64)
    torch.testing.assert_close(skill(x, y, variable_axis=0), (x.mean(0) - y).abs())


# --------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------


def test_rank_histogram_is_flat_for_an_exchangeable_truth():
    n, m = 9, 5000
    draws = torch.randn(n + 1, m, generator=_gen(30), dtype=torch.float64)
    counts = rank_histogram(rank(draws[:n], draws[n]), n)
    assert counts.shape == (n + 1,) and int(counts.sum()) == m
    chi2 = float(((counts - m / (n + 1)) ** 2 / (m / (n + 1))).sum())
    bound = stats.chi2.ppf(0.999, df=n)
    assert chi2 < bound
    # the same statistic flags an under-dispersed ensemble (U-shaped histogram)
    narrow = rank_histogram(rank(0.5 * draws[:n], draws[n]), n)
    assert float(((narrow - m / (n + 1)) ** 2 / (m / (n + 1))).sum()) > bound
    assert narrow[0] > counts[0] and narrow[-1] > counts[-1]


def test_rank_extremes_and_ties():
    x = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 2.0], [2.0, 0.0, 3.0]])
    y = torch.tensor([5.0, 0.0, -1.0])  # above all, tied with all, below all
    r = rank(x, y)
    assert r.dtype == torch.int64
    assert r.tolist() == [3, 0, 0]
    torch.testing.assert_close(rank_histogram(r, 3), torch.tensor([2, 0, 0, 1]))


def test_rank_histogram_accepts_any_shape():
    ranks = torch.tensor([[0, 1], [1, 4]])
    assert rank_histogram(ranks, 4).tolist() == [1, 2, 0, 0, 1]


# --------------------------------------------------------------------------------------------
# step_metrics and summarize
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("axis", [None, 0])
def test_step_metrics_agrees_with_the_single_functions(weighted, axis):
    x = torch.randn(7, 3, 4, generator=_gen(31), dtype=torch.float32)
    y = torch.randn(3, 4, generator=_gen(32), dtype=torch.float32)
    lw = _random_log_weights(7, 33) if weighted else None
    out = step_metrics(x, y, lw, variable_axis=axis)
    assert set(out) == {"skill", "spread", "ssr", "crps"}
    expected = {
        "skill": skill(x, y, lw, variable_axis=axis),
        "spread": spread(x, lw, variable_axis=axis),
        "ssr": ssr(x, y, lw, variable_axis=axis),
        "crps": crps(x, y, lw, variable_axis=axis),
    }
    for name, value in out.items():
        assert value.dtype == torch.float64
        assert value.shape == (() if axis is None else (3,))
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-14)


def test_float32_inputs_are_scored_in_float64():
    # an offset of 1e4 leaves float32 ~1e-3 resolution: float32 arithmetic would lose the score
    x = (1e4 + 0.01 * torch.randn(64, 10, generator=_gen(34))).float()
    y = (1e4 + 0.01 * torch.randn(10, generator=_gen(35))).float()
    for fn in (crps, skill, energy_score):
        value = fn(x, y)
        assert value.dtype == torch.float64
        torch.testing.assert_close(value, fn(x.double(), y.double()), rtol=1e-12, atol=0)
    assert spread(x).dtype == torch.float64
    torch.testing.assert_close(spread(x), spread(x.double()), rtol=1e-12, atol=0)


def test_summarize_ssr_is_the_mean_of_ratios():
    # skill 1 then 4, spread 2 both steps: ratios 2 and 0.5 -> mean 1.25; ratio of means 0.8
    metrics = {
        "skill": torch.tensor([1.0, 4.0]),
        "spread": torch.tensor([2.0, 2.0]),
        "ssr": torch.tensor([2.0, 0.5]),
        "crps": torch.tensor([0.3, 0.5]),
    }
    out = summarize(metrics)
    assert out["ssr"] == pytest.approx(1.25)
    assert out["ssr_of_means"] == pytest.approx(2.0 / 2.5)
    assert out["skill"] == pytest.approx(2.5) and out["crps"] == pytest.approx(0.4)
    assert all(isinstance(v, float) for v in out.values())
    del metrics["ssr"]  # recomputed step by step when missing
    assert summarize(metrics)["ssr"] == pytest.approx(1.25)


def test_summarize_over_steps_from_step_metrics():
    y = torch.zeros(2, dtype=torch.float64)
    steps = [
        torch.tensor([[1.0, 0.0], [3.0, 2.0]], dtype=torch.float64),
        torch.tensor([[5.0, 1.0], [7.0, -1.0]], dtype=torch.float64),
        torch.tensor([[-1.0, 0.5], [1.0, 0.5]], dtype=torch.float64),
    ]
    rows = [step_metrics(x, y, variable_axis=0) for x in steps]
    metrics = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    assert metrics["skill"].shape == (3, 2)
    out = summarize(metrics, burn_in=1)
    assert out["skill"] == pytest.approx(float(metrics["skill"][1:].mean()))
    assert out["ssr"] == pytest.approx(float(metrics["ssr"][1:].mean()))
    assert out["ssr_of_means"] == pytest.approx(
        float(metrics["spread"][1:].mean() / metrics["skill"][1:].mean())
    )


@pytest.mark.parametrize("burn_in", [3, 7, -1])
def test_summarize_rejects_bad_burn_in(burn_in):
    metrics = {"skill": torch.ones(3), "spread": torch.ones(3)}
    with pytest.raises(ValueError, match="burn_in"):
        summarize(metrics, burn_in=burn_in)


def test_summarize_rejects_inconsistent_steps():
    with pytest.raises(ValueError, match="steps"):
        summarize({"skill": torch.ones(3), "spread": torch.ones(4)})


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------

_WITH_TRUTH = [skill, ssr, crps, energy_score, rank, step_metrics]


@pytest.mark.parametrize("fn", _WITH_TRUTH)
def test_truth_shape_mismatch_names_truth_and_shapes(fn):
    x = torch.zeros(4, 3, 2)
    with pytest.raises(ValueError, match=r"truth.*\(3, 2\).*\(2, 3\)"):
        fn(x, torch.zeros(2, 3))


@pytest.mark.parametrize("fn", _WITH_TRUTH)
def test_single_member_is_rejected(fn):
    with pytest.raises(ValueError, match="particles"):
        fn(torch.zeros(1, 3), torch.zeros(3))


@pytest.mark.parametrize("fn", [ensemble_mean, spread])
def test_single_member_is_rejected_without_truth(fn):
    with pytest.raises(ValueError, match="particles"):
        fn(torch.zeros(1, 3))


@pytest.mark.parametrize("fn", [skill, ssr, crps, energy_score, step_metrics])
@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(4, 1)])
def test_log_weights_of_wrong_shape_are_rejected(fn, bad):
    with pytest.raises(ValueError, match="log_weights"):
        fn(torch.zeros(4, 2), torch.zeros(2), bad)


@pytest.mark.parametrize("fn", [skill, ssr, crps, step_metrics])
@pytest.mark.parametrize("axis", [2, -3])
def test_variable_axis_out_of_range_is_rejected(fn, axis):
    with pytest.raises(ValueError, match="variable_axis"):
        fn(torch.zeros(4, 3, 2), torch.zeros(3, 2), variable_axis=axis)
    with pytest.raises(ValueError, match="variable_axis"):
        spread(torch.zeros(4, 3, 2), variable_axis=axis)


def test_fair_crps_with_weights_is_rejected():
    with pytest.raises(ValueError, match="fair"):
        crps(torch.zeros(4, 2), torch.zeros(2), torch.full((4,), -math.log(4)), fair=True)


def test_rank_histogram_rejects_out_of_range_ranks():
    with pytest.raises(ValueError, match="ranks"):
        rank_histogram(torch.tensor([0, 5]), 4)
    with pytest.raises(ValueError, match="ranks"):
        rank_histogram(torch.tensor([-1, 2]), 4)
    with pytest.raises(TypeError, match="ranks"):
        rank_histogram(torch.tensor([0.0, 1.0]), 4)
