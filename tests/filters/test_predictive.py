"""The posterior predictive check: PIT values of the observations under the filter's one-step
predictive are uniform for an exact filter, the check does not change the run, and it reaches
the run file and the report."""

from __future__ import annotations

import numpy as np
import torch

from genfilter.experiments.config import parse_config
from genfilter.experiments.reporting import report, summarize_file
from genfilter.experiments.runner import run_config
from genfilter.io import open_run


def _cfg(check: int, steps: int = 200, method: str = "enkf", particles: int = 200):
    return parse_config(
        {
            "name": "ppc",
            "setup": "linear-gaussian",
            "emulator": "true",
            "filter": {"method": method, "particles": particles},
            "steps": steps,
            "burn_in": 10,
            "predictive_check": check,
            "save": "moments",
        }
    )


def test_exact_filter_has_nominal_coverage(tmp_path):
    """The EnKF with 200 members is (nearly) the Kalman filter on the linear-Gaussian
    system, so its one-step predictive is calibrated: 50 % / 90 % coverage within ±0.05 over
    190 steps × 4 observed components (fixed seeds)."""
    path = run_config(_cfg(400), tmp_path / "ppc.nc", progress=False)
    with open_run(path) as ds:
        c50 = float(ds["predictive_coverage_50"].values[0])
        c90 = float(ds["predictive_coverage_90"].values[0])
        pit = ds["pit"].values[0, 10:].ravel()
    assert abs(c50 - 0.5) < 0.05 and abs(c90 - 0.9) < 0.05, (c50, c90)
    hist = np.histogram(pit, bins=5, range=(0, 1))[0] / pit.size
    assert np.abs(hist - 0.2).max() < 0.05, hist
    row = summarize_file(path)
    assert abs(row["coverage_90"] - c90) < 1e-12
    written = report(path)
    assert any(p.name == "pit_histogram.png" for p in written)
    # a folder of runs (an experiment's output): one PIT panel per filter
    folder = tmp_path / "runs"
    folder.mkdir()
    path.rename(folder / "ppc.nc")
    written = report(folder)
    assert any(p.name.startswith("pit_histograms_") for p in written)


def test_a_biased_predictive_fails_the_check():
    """An ensemble shifted away from the truth puts the observations in the tails of its
    predictive: PIT values pile up at 0 or 1 and coverage collapses (the check can fail)."""
    from genfilter.emulators.simulator import true_model
    from genfilter.filters.predictive import coverage, predictive_pit
    from genfilter.observations import Observation, Select, isotropic_noise
    from genfilter.systems.linear_gaussian import LinearGaussian

    system = LinearGaussian(dim=4, seed=1)
    em = true_model(system)
    g = torch.Generator().manual_seed(0)
    pits = []
    for _ in range(50):
        x = system.attractor_states(1, g, dtype=torch.float64)
        y = Select([0, 2])(system.step(x, 1, g))[0] + 0.5 * torch.randn(
            2, generator=g, dtype=torch.float64
        )
        obs = Observation(y, Select([0, 2]), isotropic_noise(0.5))
        members = x + 10.0 + 0.1 * torch.randn(64, 4, generator=g, dtype=torch.float64)
        pits.append(
            predictive_pit(em, members, torch.zeros(64, dtype=torch.float64), obs, g, samples=128)
        )
    pit = torch.stack(pits)
    assert coverage(pit, 0.9) < 0.1 and float(torch.minimum(pit, 1 - pit).mean()) < 0.05


def test_the_check_does_not_change_the_run(tmp_path):
    a = run_config(_cfg(0, steps=12, particles=32), tmp_path / "a.nc", progress=False)
    b = run_config(_cfg(64, steps=12, particles=32), tmp_path / "b.nc", progress=False)
    with open_run(a) as da, open_run(b) as db:
        assert np.array_equal(da["mean"].values, db["mean"].values)
        assert "pit" not in da and "pit" in db
