"""A first Lorenz-96 filtering comparison (issue #12), setup ``l96-sparse``: D = 40, F = 8,
every second component observed every 0.05 time units with noise std 1, a climatological
initial ensemble; every filter forecasts with the shipped Lorenz-96 emulator, and the LETKF
also runs on the true model as the classical reference.

``--localization C ...`` adds FA-APF rows with localised weights of radius C (and the ESS
interval ``--ess LO HI``; docs/method.md#localised-weights), and ``--jitter Q ...`` one such
row per model-noise std Q (docs/method.md#model-noise).

Rows: FA-APF with the matrix-free observed covariance (M + 1 = 21 backward passes per
diffusion step) and with the dense projected covariance (D = 40), the LETKF (localisation
radius 6, inflation 1.05, the settings of ``configs/l96-letkf.yaml``, not tuned here), the
EnKF (no localisation, inflation 1.05) and the bootstrap PF.  Each cell is a netCDF run file
under ``--out`` (resumable); the script prints skill, spread, CRPS and seconds per step.

    python benchmarks/l96_sparse.py                       # N = 40, 2 runs x 100 steps
    python benchmarks/l96_sparse.py --runs 10 --steps 200 # the scale of the issue
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from genfilter.experiments.config import parse_config
from genfilter.experiments.reporting import summarize_file
from genfilter.experiments.runner import run_config

ROWS = [
    ("FA-APF (observed covariance)", "shipped", "fa-apf", {}, {"covariance": "observed"}),
    ("FA-APF (projected covariance)", "shipped", "fa-apf", {}, {"covariance": "projected"}),
    ("LETKF", "shipped", "letkf", {"radius": 6.0, "inflation": 1.05}, {}),
    ("EnKF", "shipped", "enkf", {"inflation": 1.05}, {}),
    ("BPF", "shipped", "bpf", {}, {}),
    ("LETKF (true model)", "true", "letkf", {"radius": 6.0, "inflation": 1.05}, {}),
]


def localised_rows(
    radii: list[float], ess: list[float] | None, jitters: list[float] | None = None
) -> list[tuple]:
    """FA-APF rows with localised weights (docs/method.md#localised-weights), observed
    covariance, one per radius (and the ESS interval ``ess`` when given), and per model-noise
    std in ``jitters`` (docs/method.md#model-noise; none: no model noise)."""
    rows = []
    for c in radii:
        for q in jitters or [None]:
            options = {"localization": c}
            label = f"FA-APF (localised, c = {c:g}"
            if ess:
                options["ess_interval"] = list(ess)
                label += f", ESS {ess[0]:g}-{ess[1]:g}"
            if q is not None:
                options["jitter"] = q
                label += f", model noise {q:g}"
            rows.append((label + ")", "shipped", "fa-apf", options, {"covariance": "observed"}))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=40)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--burn-in", type=int, default=20)
    p.add_argument("--out", default="outputs/l96-sparse")
    p.add_argument("--rows", default=None, help="comma-separated subset of the row labels")
    p.add_argument(
        "--localization", type=float, nargs="+", default=[], help="localised FA-APF rows: radii"
    )
    p.add_argument("--ess", type=float, nargs=2, default=None, help="their ESS interval")
    p.add_argument(
        "--jitter",
        type=float,
        nargs="+",
        default=None,
        help="their model-noise stds (one row each)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = None if args.rows is None else {r.strip() for r in args.rows.split(",")}
    lines = [
        f"| filter (N = {args.particles}) | skill | spread | CRPS | s / step |",
        "|---|---|---|---|---|",
    ]
    rows = ROWS + localised_rows(args.localization, args.ess, args.jitter)
    local = {r[0] for r in rows[len(ROWS) :]}
    for label, emulator, method, options, emulator_options in rows:
        if wanted is not None and label not in wanted and label not in local:
            continue
        cfg = parse_config(
            {
                "name": "l96-sparse",
                "setup": "l96-sparse",
                "emulator": emulator,
                "emulator_options": emulator_options,
                "filter": {"method": method, "particles": args.particles, "options": options},
                "steps": args.steps,
                "burn_in": args.burn_in,
                "runs": args.runs,
                "seed": 0,
                "save": "moments",
            }
        )
        slug = "".join(c if c.isalnum() else "-" for c in label.lower())
        path = out / f"{slug}_N{args.particles}_r{args.runs}_k{args.steps}.nc"
        # resume=True: a finished cell of the same config is reused, a started one continues
        run_config(cfg, path, resume=True, progress=False, label=label)
        s = summarize_file(path)
        per_step = s["seconds"] / (s["runs"] * args.steps)
        lines.append(
            f"| {label} | {s['skill']:.3f} ± {s['skill_se']:.3f} | {s['spread']:.3f} | "
            f"{s['crps']:.3f} ± {s['crps_se']:.3f} | {per_step:.2f} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))
    (out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
