"""Experiment configs validate and name the faulty field in every error; `genfilter filter`
writes its netCDF output, and an interrupted run resumes to the same result as an
uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from typer.testing import CliRunner

from genfilter.cli import app
from genfilter.experiments.config import ConfigError, load_config, parse_config
from genfilter.experiments.setups import SETUPS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _raw(**changes):
    raw = yaml.safe_load((CONFIGS / "l63-a.yaml").read_text())
    # expand the named setup so that its sections (observations, initial) can be changed
    raw = {**SETUPS[raw.pop("setup")].fields(), **raw}
    for key, value in changes.items():
        node = raw
        *head, last = key.split(".")
        for h in head:
            node = node[h]
        node[last] = value
    return raw


def test_shipped_configs_validate():
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.steps > cfg.burn_in


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("filter.method", "kalman", "filter.method"),
        ("filter.particles", 1, "filter.particles"),
        ("filter.particles", "many", "filter.particles"),
        ("filter.options", {"jitter_std": 1.0}, "filter.options.jitter_std"),
        ("observations.noise_std", -0.1, "observations.noise_std"),
        ("observations.indices", [], "observations.indices"),
        ("observations.operator", "fourier", "observations.operator"),
        ("initial.recipe", "random", "initial.recipe"),
        ("burn_in", 100, "burn_in"),
        ("steps", 0, "steps"),
        ("system", "lorenz84", "system"),
        ("save", "everything", "save"),
        ("emulator", "/nonexistent/ckpt.pt", "emulator"),
    ],
)
def test_config_errors_name_the_field(key, value, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        parse_config(_raw(**{key: value}))


def test_config_structure_errors():
    raw = _raw()
    raw["filters"] = raw.pop("filter")
    with pytest.raises(ConfigError, match="'filters'.*not a known field"):
        parse_config(raw)
    raw = _raw()
    del raw["filter"]
    with pytest.raises(ConfigError, match="'filter'.*required"):
        parse_config(raw)
    with pytest.raises(
        ConfigError, match="'emulator'.*no shipped emulator for 'linear-gaussian'.*lorenz63"
    ):
        parse_config(_raw(system="linear-gaussian", system_options={}))
    with pytest.raises(ConfigError, match="mapping"):
        parse_config([1, 2])


def test_overrides_are_validated_and_reset_foreign_options():
    cfg = parse_config(_raw(**{"filter.options": {"weights": "gaussian"}}))
    assert cfg.replace(particles=64).filter.options == {"weights": "gaussian"}
    assert cfg.replace(method="enkf").filter.options == {}
    with pytest.raises(ConfigError, match="filter.particles"):
        cfg.replace(particles=1)


def _tiny(tmp_path, **changes) -> Path:
    raw = _raw(**{"steps": 12, "burn_in": 2, "runs": 2, "filter.particles": 8, **changes})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_filter_command_writes_the_documented_netcdf(tmp_path):
    out = tmp_path / "run.nc"
    res = CliRunner().invoke(
        app, ["filter", str(_tiny(tmp_path)), "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert str(out) in res.output
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert dict(ds.sizes) == {"run": 2, "step": 12, "member": 8, "component": 3, "obs": 2}
        for name in (
            "truth",
            "observations",
            "particles",
            "log_weights",
            "mean",
            "spread",
            "ess",
            "inflation",
            "log_evidence",
            "seconds",
            "skill",
            "spread_metric",
            "ssr",
            "crps",
            "summary_skill",
            "summary_crps",
        ):
            assert name in ds, name
            assert "long_name" in ds[name].attrs
        assert ds.attrs["method"] == "fa-apf" and "git" in ds.attrs["source"]
        assert parse_config(yaml.safe_load(ds.attrs["config"])).filter.particles == 8
        # the mean is the weighted mean of the stored particles; the summary is the
        # average of the per-step skill after the burn-in
        w = np.exp(ds.log_weights.values)[..., None]
        assert np.allclose((w * ds.particles.values).sum(2), ds["mean"].values, atol=1e-5)
        assert np.allclose(ds.skill.values[:, 2:].mean(1), ds.summary_skill.values)
        # runs are different twins, the truth is observed with the configured noise
        assert not np.allclose(ds.truth.values[0], ds.truth.values[1])
        resid = ds.observations.values - ds.truth.values[..., [0, 2]]
        assert 0.15 < resid.std() < 0.35
    assert not (tmp_path / "run.nc.parts").exists()


def test_unfinished_output_needs_resume_and_the_same_config(tmp_path):
    cfg = _tiny(tmp_path)
    out = tmp_path / "run.nc"
    (tmp_path / "run.nc.parts").mkdir()
    res = CliRunner().invoke(app, ["filter", str(cfg), "--out", str(out), "--no-progress"])
    assert res.exit_code == 2 and "--resume" in res.output
    (tmp_path / "run.nc.parts" / "config.yaml").write_text(
        yaml.safe_dump(_raw(steps=12, burn_in=2, runs=2, **{"filter.particles": 9}))
    )
    res = CliRunner().invoke(
        app, ["filter", str(cfg), "--out", str(out), "--no-progress", "--resume"]
    )
    assert res.exit_code == 2 and "config differs" in res.output


def _checkpoint_step(parts: Path) -> int:
    files = sorted(parts.glob("run*.pt"))
    if not files:
        return 0
    try:
        return int(torch.load(files[-1], weights_only=True)["step"]) + 100 * (len(files) - 1)
    except Exception:
        return 0


def test_killed_run_resumes_bit_identically(tmp_path):
    """Kill `genfilter filter` in a subprocess mid-run, resume it, and compare with an
    uninterrupted run of the same config: particles, weights and metrics identical."""
    cfg = _tiny(tmp_path, steps=30, runs=1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "genfilter.cli", "filter", str(cfg), "--no-progress"]
    full, killed = tmp_path / "full.nc", tmp_path / "killed.nc"
    subprocess.run(cmd + ["--out", str(full)], check=True, env=env, capture_output=True)

    proc = subprocess.Popen(
        cmd + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parts = tmp_path / "killed.nc.parts"
    deadline = time.time() + 120
    while _checkpoint_step(parts) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _checkpoint_step(parts)
    assert 5 <= done < 30 and not killed.exists()

    res = subprocess.run(
        cmd + ["--out", str(killed), "--resume"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    with (
        xr.open_dataset(full, engine="h5netcdf") as a,
        xr.open_dataset(killed, engine="h5netcdf") as b,
    ):
        for name in ("particles", "log_weights", "mean", "ess", "inflation", "skill", "crps"):
            assert np.array_equal(a[name].values, b[name].values), name


def test_unquoted_true_emulator_means_the_true_model():
    # l63-a.yaml's emulator options are the shipped emulator's sampling options, which the
    # true model does not take (an error naming the field)
    raw = _raw(emulator=True, emulator_options={})
    assert parse_config(raw).emulator == "true"
    with pytest.raises(ConfigError, match="'emulator_options'"):
        parse_config(_raw(emulator=True))
    with pytest.raises(ConfigError, match="'emulator'"):
        parse_config(_raw(emulator=False, emulator_options={}))


def test_a_lock_left_by_a_finished_process_is_taken_over(tmp_path):
    """.parts/lock of a process that is gone (a PID that has exited) does not block
    --resume; the finished run leaves no lock and no .parts behind."""
    import socket
    import subprocess

    from genfilter.experiments.config import parse_config
    from genfilter.experiments.runner import run_config

    cfg = parse_config(
        {
            "name": "t",
            "setup": "l63-a",
            "emulator": "true",
            "steps": 3,
            "burn_in": 0,
            "runs": 1,
            "filter": {"method": "enkf", "particles": 8},
        }
    )
    out = tmp_path / "o.nc"
    parts = tmp_path / "o.nc.parts"
    parts.mkdir()
    (parts / "config.yaml").write_text(cfg.to_yaml())
    gone = subprocess.Popen(["true"])
    gone.wait()
    (parts / "lock").write_text(f"{gone.pid} {socket.gethostname()}")
    run_config(cfg, out, resume=True, progress=False)
    assert out.is_file() and not parts.exists()
