"""`genfilter experiment` (cells, reuse, results table), `genfilter report` and
`genfilter diagnose proposal`."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from genfilter.cli import app
from genfilter.experiments.l63_results import Scale, run_experiment
from genfilter.experiments.reporting import report, summarize_file

TINY = Scale(runs=2, steps=6, burn_in=1, table_n=4, sizes=(4, 8), bayes_n=300)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    run_experiment(
        "l63-ensemble-size",
        TINY,
        out,
        rows=["BPF", "EnKF", "FA-APF"],
        setups=("a",),
        progress=False,
        echo=lambda *_: None,
    )
    return out


def test_experiment_writes_cells_and_results(sweep):
    cells = sorted(p.name for p in (sweep / "cells").glob("*.nc"))
    expected = [f"l63-a_{r}_N{n}.nc" for r in ("bpf", "enkf", "fa-apf") for n in (4, 8)]
    assert cells == sorted(expected + ["l63-a_bayes-limit_N300.nc"])
    rows = list(csv.DictReader(open(sweep / "results.csv")))
    assert len(rows) == 7
    # the summary in the table is the file's own summary
    by = {(r["filter"], int(r["N"])): r for r in rows}
    s = summarize_file(str(sweep / "cells" / "l63-a_enkf_N8.nc"))  # a str path works too
    assert abs(float(by[("EnKF", 8)]["skill"]) - s["skill"]) < 1e-9
    assert s["runs"] == 2 and s["filter"] == "EnKF"
    # the Bayes limit runs on the true model with many particles, on the same twins
    assert "Bayes limit" in (sweep / "results.md").read_text()


def test_experiment_reuses_finished_cells(sweep):
    before = {p.name: p.stat().st_mtime_ns for p in (sweep / "cells").glob("*.nc")}
    run_experiment(
        "l63-ensemble-size",
        TINY,
        sweep,
        rows=["BPF", "EnKF", "FA-APF"],
        setups=("a",),
        progress=False,
        echo=lambda *_: None,
    )
    after = {p.name: p.stat().st_mtime_ns for p in (sweep / "cells").glob("*.nc")}
    assert before == after


def test_results_table_of_skill_against_n(sweep):
    rows = list(csv.DictReader(open(sweep / "results.csv")))
    skill = {(r["filter"], int(r["N"])): float(r["skill"]) for r in rows}
    text = (sweep / "results.md").read_text()
    assert "| filter | N = 4 | N = 8 |" in text
    for n in (4, 8):
        best = min((v, f) for (f, m), v in skill.items() if m == n and f != "Bayes limit")[1]
        line = next(
            ln
            for ln in text.splitlines()
            if ln.startswith(f"| {best} |") and "N =" not in ln and ln.count("|") == 4
        )
        bold = [i for i, v in enumerate(line.split("|")[2:4]) if v.strip().startswith("**")]
        assert (0 if n == 4 else 1) in bold, line


def test_paired_differences_of_the_same_twins(sweep):
    """Every row minus FA-APF, run by run, recomputed here from the cells' run skills."""
    import math

    import xarray as xr

    from genfilter.experiments.l63_results import paired_differences

    cells_dir = sweep / "cells"

    def skills(name):
        with xr.open_dataset(cells_dir / name, engine="h5netcdf") as ds:
            return ds["summary_skill"].values.copy()

    done = [
        ("a", label, n, cells_dir / f"l63-a_{slug}_N{n}.nc")
        for label, slug in (("BPF", "bpf"), ("EnKF", "enkf"), ("FA-APF", "fa-apf"))
        for n in (4, 8)
    ] + [("a", "Bayes limit", 300, cells_dir / "l63-a_bayes-limit_N300.nc")]
    pairs = paired_differences(done)
    by = {(p["N"], p["filter"]): p for p in pairs}
    assert set(by) == {(n, f) for n in (4, 8) for f in ("BPF", "EnKF", "Bayes limit (N = 300)")}
    for n in (4, 8):
        ref = skills(f"l63-a_fa-apf_N{n}.nc")
        for f, name in (("EnKF", f"l63-a_enkf_N{n}.nc"), ("Bayes limit (N = 300)", None)):
            d = skills(name or "l63-a_bayes-limit_N300.nc") - ref
            p = by[n, f]
            assert math.isclose(p["difference"], d.mean(), rel_tol=1e-12, abs_tol=1e-15)
            assert math.isclose(p["difference_se"], d.std(ddof=1) / math.sqrt(d.size))
            assert p["worse"] == int((d > 0).sum()) and p["runs"] == 2
    assert "Paired differences, row minus FA-APF" in (sweep / "results.md").read_text()


def test_results_keep_the_other_setups_cells(sweep, tmp_path):
    """Two processes (``--setup a``, ``--setup b``) share an output folder: whichever ends
    last writes a table with both setups."""
    import shutil

    out = tmp_path / "both"
    shutil.copytree(sweep / "cells", out / "cells")
    run_experiment(
        "l63-ensemble-size",
        TINY,
        out,
        rows=["EnKF"],
        setups=("b",),
        progress=False,
        echo=lambda *_: None,
    )
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["setup"] for r in rows} == {"a", "b"}
    assert sum(r["setup"] == "b" for r in rows) == 3  # EnKF N=4, 8 and the Bayes limit
    text = (out / "results.md").read_text()
    assert "## Setup (a)" in text and "## Setup (b)" in text


def test_sizes_run_only_the_named_cells(tmp_path):
    """``sizes`` gives one N a process of its own: only its cells run, the Bayes limit only
    when its particle count is named, and a size outside the scale is a one-line error
    before anything is written."""
    out = tmp_path / "one-n"
    run_experiment(
        "l63-ensemble-size",
        TINY,
        out,
        rows=["EnKF"],
        setups=("a",),
        progress=False,
        echo=lambda *_: None,
        sizes=(8,),
    )
    assert sorted(p.name for p in (out / "cells").glob("*.nc")) == ["l63-a_enkf_N8.nc"]
    run_experiment(
        "l63-ensemble-size",
        TINY,
        out,
        rows=["BPF"],
        setups=("a",),
        progress=False,
        echo=lambda *_: None,
        sizes=(300,),
    )
    assert sorted(p.name for p in (out / "cells").glob("*.nc")) == [
        "l63-a_bayes-limit_N300.nc",
        "l63-a_enkf_N8.nc",
    ]
    # the tables hold every finished cell, also of rows another process asked for
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted((r["filter"], r["N"]) for r in rows) == [("Bayes limit", "300"), ("EnKF", "8")]
    with pytest.raises(ValueError, match=r"sizes must be among \[4, 8, 300\].*\[5\]"):
        run_experiment("l63-ensemble-size", TINY, tmp_path / "bad", sizes=(5,))
    assert not (tmp_path / "bad").exists()
    res = CliRunner().invoke(
        app, ["experiment", "l63-ensemble-size", "--sizes", "16,x", "--out", str(tmp_path / "c")]
    )
    assert res.exit_code == 2 and "--sizes must be comma-separated integers" in res.output


def test_interpolant_rows_run_on_request_only():
    from genfilter.experiments.l63_results import ROWS, cell_config, default_rows

    # --rows is comma-separated: a label with a comma could not be asked for
    assert not [r for r in ROWS if "," in r]

    for exp in ("l63-table1", "l63-ensemble-size"):
        rows = default_rows(exp)
        assert "FA-APF" in rows and not any("interpolant" in r for r in rows)
    assert "FA-APF (exact)" in default_rows("l63-table1")
    assert "FA-APF (exact)" not in default_rows("l63-ensemble-size")
    assert "FA-APF (oracle)" not in default_rows("l63-table1")
    cfg = cell_config("a", "FA-APF (interpolant; gaussian w.)", 16, TINY)
    assert cfg.emulator == "shipped-interpolant"
    assert cfg.filter.options["weights"] == "gaussian"
    assert cell_config("a", "BPF (interpolant)", 16, TINY).filter.method == "bpf"


def test_report_on_a_file_and_a_folder(sweep):
    written = report(sweep / "cells" / "l63-a_fa-apf_N4.nc")
    names = {p.name for p in written}
    assert {
        "summary.md",
        "summary.csv",
        "skill_spread.png",
        "trajectories.png",
        "rank_histogram.png",
        "ess_inflation.png",
    } <= names
    for p in written:
        assert p.stat().st_size > 0
    assert "FA-APF" in (written[0]).read_text()
    res = CliRunner().invoke(app, ["report", str(sweep / "cells")])
    assert res.exit_code == 0, res.output
    for name in (
        "report.md",
        "report.csv",
        "skill_vs_n_l63-a.png",
        "skill_vs_step_l63-a.png",
        "rank_histograms_l63-a.png",
        "ess_l63-a.png",
    ):
        assert (sweep / "cells" / name).stat().st_size > 0, name
    text = (sweep / "cells" / "report.md").read_text()
    assert text.count("| l63-a |") == 7


def test_report_and_experiment_errors(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path / "none.nc")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "no .nc run files" in res.output
    res = CliRunner().invoke(app, ["experiment", "l63-table9"])
    assert res.exit_code == 2 and "l63-table1" in res.output
    res = CliRunner().invoke(app, ["experiment", "l63-table1", "--quick", "--full"])
    assert res.exit_code == 2
    res = CliRunner().invoke(app, ["experiment", "l63-table1", "--rows", "UKF"])
    assert res.exit_code == 2 and "unknown row" in res.output


def test_diagnose_proposal_command(tmp_path):
    out = tmp_path / "prop.md"
    res = CliRunner().invoke(
        app,
        [
            "diagnose",
            "proposal",
            "--setup",
            "a",
            "--pairs",
            "2",
            "--samples",
            "32",
            "--draws",
            "2000",
            "--no-progress",
            "--covariance",
            "projected",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    lines = [l for l in out.read_text().splitlines() if l.startswith("| (a)")]
    assert len(lines) == 3
    res = CliRunner().invoke(app, ["diagnose", "proposal", "--covariance", "dense"])
    assert res.exit_code == 2 and "covariance" in res.output


def test_cell_configs_of_the_paper_experiments():
    from genfilter.experiments.l63_results import BAYES, ROWS, SCALES, cell_config

    full = SCALES["full"]
    raw = cell_config("b", "FA-APF (raw MMPS)", 64, full)
    assert raw.emulator_options == {"covariance": "tweedie"} and raw.filter.method == "fa-apf"
    assert raw.observations.indices == (0,) and raw.runs == 10 and raw.steps == 100
    assert cell_config("a", "FA-APF (paper)", 64, full).emulator_options == {}
    assert cell_config("a", "FA-APF (paper)", 64, full).filter.options == {}
    bayes = cell_config("a", BAYES, full.bayes_n, full)
    assert bayes.emulator == "true" and bayes.filter.particles == 100_000
    assert bayes.save == "moments"
    # every row's options are valid for its filter (validated by parse_config), on every
    # setup (the tuned settings of (c) and (d) included)
    for setup in "abcd":
        for label in ROWS:
            cell_config(setup, label, 16, full)
    oracle = cell_config("c", "FA-APF (exact)", 64, full)
    assert oracle.emulator == "oracle" and oracle.emulator_options == {"moves": 32}
    assert oracle.filter.options == {"weights": "exact", "ess_interval": None}
    first = cell_config("c", "FA-APF (oracle)", 64, full)
    assert first.filter.options == {"weights": "exact"}
    assert first.emulator_options == {"shared_draws": False}


def test_one_fa_apf_configuration_for_lorenz63_everywhere():
    """The experiments' FA-APF row, the shipped configs and the demo run the same FA-APF
    (fixed-point mean, gaussian weights) at every N and on every setup; the paper's
    configuration stays a row of its own."""
    from genfilter.experiments.config import load_config
    from genfilter.experiments.demo import demo_configs
    from genfilter.experiments.l63_results import (
        FIXED_POINT_MEAN,
        MOMENTS_SIGMA,
        SCALES,
        cell_config,
    )

    full = SCALES["full"]
    for setup, interval in zip("abcd", (0.1, 0.1, 0.5, 0.5), strict=True):
        em = {**FIXED_POINT_MEAN, "moments_sigma": MOMENTS_SIGMA[interval]}
        want = ({"weights": "gaussian"}, em)
        for n in full.sizes:
            cfg = cell_config(setup, "FA-APF", n, full)
            assert (cfg.filter.options, cfg.emulator_options) == want
            assert cfg.system_options.get("interval", 0.1) == interval
        demo = demo_configs(obs=setup)["FA-APF"]
        assert (demo.filter.options, demo.emulator_options) == want
        cfg = load_config(f"configs/l63-{setup}.yaml")
        assert (cfg.filter.method, cfg.filter.options, cfg.emulator_options) == ("fa-apf", *want)
        assert cfg.setup == f"l63-{setup}"
    # the Table 1 config of (c) is the shipped config of (c)
    table = cell_config("c", "FA-APF", 64, full)
    shipped = load_config("configs/l63-c.yaml")
    assert table.filter == shipped.filter and table.emulator_options == shipped.emulator_options
    assert table.runs == shipped.runs and table.steps == shipped.steps


def test_twin_values_pair_runs_by_twin_seed(sweep):
    """Each run's summary skill under its twin seed; a seed found twice is refused."""
    import xarray as xr

    from genfilter.experiments.reporting import twin_values

    path = sweep / "cells" / "l63-a_enkf_N8.nc"
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        expected = dict(zip(ds["twin_seed"].values.tolist(), ds["summary_skill"].values.tolist()))
        crps = ds["summary_crps"].values.tolist()
    assert len(expected) == 2
    assert twin_values([path]) == expected
    assert list(twin_values([str(path)], "crps").values()) == crps
    with pytest.raises(ValueError, match="twin seed .* is in .*l63-a_enkf_N8.nc and in"):
        twin_values([path, path])
