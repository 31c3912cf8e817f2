"""End-to-end command line: data -> train -> validate, and the demo, at tiny sizes."""

from __future__ import annotations

import json

import torch
import xarray as xr
from typer.testing import CliRunner

from genfilter.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_data_train_validate(tmp_path):
    data = tmp_path / "l63"
    out = invoke(
        "data",
        "lorenz63",
        "--out",
        data,
        "--trajectories",
        10,
        "--length",
        30,
        "--burn-in",
        1.0,
        "--no-progress",
    )
    assert "Dataset written to" in out and (data / "train.nc").exists()
    ckpt = tmp_path / "l63.pt"
    out = invoke(
        "train",
        "lorenz63",
        "--data",
        data,
        "--out",
        ckpt,
        "--epochs",
        2,
        "--batch-size",
        32,
        "--hidden",
        16,
        "--no-progress",
    )
    assert "Checkpoint written to" in out
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert meta["system"] == "lorenz63" and "epsilon" in json.loads(meta["system_kwargs"])
    out = invoke(
        "validate",
        ckpt,
        "--states",
        2,
        "--samples",
        16,
        "--rollout",
        5,
        "--rollout-members",
        2,
        "--steps",
        4,
        "--no-progress",
    )
    assert "energy distance true vs true (floor)" in out and "autocorrelation lag 1" in out
    # fine-tuning: the architecture comes from --init (no --hidden), recorded in meta
    tuned = tmp_path / "l63-tuned.pt"
    out = invoke(
        "train", "lorenz63", "--data", data, "--out", tuned, "--epochs", 1,
        "--batch-size", 32, "--init", ckpt, "--no-progress",
    )  # fmt: skip
    first = torch.load(ckpt, weights_only=True)
    second = torch.load(tuned, weights_only=True)
    assert second["denoiser_config"] == first["denoiser_config"]
    assert second["meta"]["init"] == str(ckpt)
    for extra, flag in ((["--hidden", "32"], "--hidden"), ([], "'lorenz96'")):
        system = "lorenz63" if extra else "lorenz96"
        result = runner.invoke(
            app, ["train", system, "--data", str(data), "--init", str(ckpt), *extra]
        )
        assert result.exit_code != 0 and flag in result.output, result.output


def test_train_without_data_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["train", "lorenz63", "--data", str(tmp_path / "none")])
    assert result.exit_code != 0 and "genfilter data lorenz63" in result.output


def test_linear_gaussian_demo(tmp_path):
    out = invoke(
        "demo",
        "--system",
        "linear-gaussian",
        "--out",
        tmp_path,
        "--particles",
        16,
        "--steps",
        6,
        "--no-progress",
    )
    assert "Kalman (exact)" in out and "FA-APF (gaussian weights)" in out
    assert next(tmp_path.glob("trajectories_*.png")).exists()
    with xr.open_dataset(tmp_path / "enkf.nc", engine="h5netcdf") as ds:
        assert ds["particles"].shape == (1, 6, 16, 8)  # run, step, member, component


def test_filter_option_overrides_reach_the_run(tmp_path):
    """``--option KEY=VALUE`` (YAML values) merges into filter.options after ``--method``;
    the run file stores the config as run."""
    import yaml
    from test_failures import write_config

    write_config(tmp_path, "c.yaml", filter={"method": "bpf", "options": {"jitter": 0.5}}, steps=2)
    argv = ["filter", str(tmp_path / "c.yaml"), "--method", "fa-apf", "--no-progress"]
    argv += ["--option", "weights=gaussian", "--option", "ess_interval=null"]
    result = runner.invoke(app, [*argv, "--out", str(tmp_path / "o.nc")])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(tmp_path / "o.nc", engine="h5netcdf") as ds:
        stored = yaml.safe_load(ds.attrs["config"])["filter"]
    # the BPF's jitter went with the change of method; the two options are typed YAML
    assert stored["method"] == "fa-apf"
    assert stored["options"] == {"weights": "gaussian", "ess_interval": None}


def test_emulator_option_overrides_reach_the_emulator(tmp_path):
    """``--emulator-option KEY=VALUE`` merges into emulator_options; the run file stores it,
    and the emulator gets it: the fixed-point mean makes different weights, so a different
    run from the same seed."""
    import yaml
    from test_failures import write_config

    write_config(tmp_path, "c.yaml", steps=2)
    base = ["filter", str(tmp_path / "c.yaml"), "--no-progress"]
    argv = [*base, "--emulator-option", "mean_sigma=0.3", "--emulator-option", "mean_iterations=1"]
    result = runner.invoke(app, [*argv, "--out", str(tmp_path / "fp.nc")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "paper.nc")])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(tmp_path / "fp.nc", engine="h5netcdf") as ds:
        stored = yaml.safe_load(ds.attrs["config"])["emulator_options"]
        fp = ds["mean"].values
    with xr.open_dataset(tmp_path / "paper.nc", engine="h5netcdf") as ds:
        paper = ds["mean"].values
    assert stored["mean_sigma"] == 0.3 and stored["mean_iterations"] == 1
    assert not (fp == paper).all()


def test_bad_input_gives_a_message_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["data", "lorenz63", "--out", str(tmp_path), "--trajectories", "5"])
    assert result.exit_code == 2 and "too few for split" in result.output
