"""EnSF and EnFF settings for the stochastic Lorenz-63 twins of the paper (setups l63-a, l63-b: noise std 0.25,
observations every 0.1), where the values tuned on deterministic L63 with noise std 1
(docs/baselines.md) diverge.

A small grid on setup (a) (x1, x3 observed) with the *true* model, N = 32, 40 cycles
(burn-in 10), one twin (seed 0); prints skill and spread per setting.  The EnSF step is an
explicit Euler–Maruyama step of a score whose likelihood part has curvature
std²/σ_y² ≈ 64/0.0625 ≈ 1000 in normalised units: 100 steps (dt = 0.01) are unstable, 1000
steps are not.  The chosen rows are used by `genfilter experiment l63-*`
(genfilter.experiments.l63_results.ROWS).

    python benchmarks/l63_stochastic_grid.py          # about 10 minutes on one core
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import xarray as xr

from genfilter.experiments.config import parse_config
from genfilter.experiments.runner import run_config

GRID = [
    ("enkf", {}),
    ("ensf", {"score": "mixture", "eps_beta": 0.0003, "steps": 100}),  # the deterministic-L63 value
    ("ensf", {"score": "paired", "eps_beta": 0.0003, "steps": 1000}),
    ("ensf", {"score": "mixture", "eps_beta": 0.0003, "steps": 1000}),
    ("ensf", {"score": "paired", "eps_beta": 0.01, "steps": 1000}),
    (
        "enff",
        {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.1},
    ),  # the deterministic-L63 value
    ("enff", {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.01}),
    ("enff", {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.001}),
    ("enff", {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.01, "steps": 50}),
    ("enff", {"path": "f2p", "sigma_min": 0.1, "guidance_scale": 0.01, "steps": 50}),
]


def main() -> None:
    torch.set_num_threads(1)
    base = {
        "name": "grid",
        "system": "lorenz63",
        "emulator": "true",
        "observations": {"operator": "select", "indices": [0, 2], "noise_std": 0.25},
        "steps": 40,
        "burn_in": 10,
        "save": "moments",
    }
    print("| method | options | skill | spread |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (method, options) in enumerate(GRID):
            cfg = parse_config(
                {**base, "filter": {"method": method, "particles": 32, "options": options}}
            )
            try:
                path = run_config(cfg, Path(tmp) / f"{i}.nc", progress=False)
                with xr.open_dataset(path, engine="h5netcdf") as ds:
                    skill, spread = float(ds.summary_skill.mean()), float(ds.summary_spread.mean())
                print(f"| {method} | {options} | {skill:.3g} | {spread:.3g} |", flush=True)
            except (FloatingPointError, ValueError, RuntimeError) as exc:
                print(f"| {method} | {options} | failed: {str(exc)[:60]} | |", flush=True)


if __name__ == "__main__":
    main()
