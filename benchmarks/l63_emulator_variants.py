"""FA-APF and the FlowDAS ensemble on Lorenz-63 setup (c) (or (a)) with each emulator family,
guidance and solver (issue #13's comparison): skill, CRPS, seconds per step and network
passes per step, N = 64, 10 runs × 100 steps (burn-in 10), the twins of Table 1.

Rows:
- FA-APF, diffusion emulator, MMPS with the projected covariance (the library default);
- FA-APF, diffusion, raw MMPS (Tweedie covariance) with GMRES 1 (the paper) / BiCGStab 2
  (the GenCast code's solver);
- FA-APF, diffusion, DPS guidance (Chung et al. 2023, step rule ζ' = 1);
- FA-APF, the shipped stochastic-interpolant emulator (``emulator: shipped-interpolant``,
  200 SDE steps);
- FlowDAS-style ensemble on the diffusion emulator / FlowDAS proper on the interpolant.

Cells already run by ``genfilter experiment l63-table1 --full --setup c`` (same config) are
reused from ``--table1``; every other cell is written under ``--out`` and resumes if stopped.

    python benchmarks/l63_emulator_variants.py                    # hours on one core (cached)
    python benchmarks/l63_emulator_variants.py --setup a          # the same rows on (a)
    python benchmarks/l63_emulator_variants.py --passes-only      # passes and s / step only

The seconds per step are the median of 5 filter steps timed in this process (one thread),
not the cells' wall time, which depends on what else ran beside them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from genfilter.experiments.config import parse_config
from genfilter.experiments.l63_results import SCALES, _cell_path
from genfilter.experiments.reporting import summarize_file
from genfilter.experiments.runner import build_emulator, build_filter, build_twin_setup, run_config
from genfilter.experiments.twin import make_twin


def variants() -> list[tuple[str, str, dict, str | None]]:
    """(label, method, emulator_options, Table-1 row whose cell is the same config)."""
    rows = [
        ("FA-APF · diffusion · MMPS projected", "fa-apf", {}, "FA-APF"),
        (
            "FA-APF · diffusion · raw MMPS, GMRES 1",
            "fa-apf",
            {"covariance": "tweedie"},
            "FA-APF (raw MMPS)",
        ),
        (
            "FA-APF · diffusion · raw MMPS, BiCGStab 2",
            "fa-apf",
            {"covariance": "tweedie", "solver": "bicgstab"},
            None,
        ),
        ("FA-APF · diffusion · DPS", "fa-apf", {"guidance": "dps"}, None),
        ("FlowDAS-style · diffusion", "flowdas", {}, "FlowDAS"),
    ]
    rows += [
        ("FA-APF · interpolant · MMPS projected", "fa-apf", {}, None),
        # guidance scale 1 and 0.3 diverge on (c) (non-finite SDE states at s = 0.07 and
        # 0.19); 0.1 scored 1.05 and 0.03 1.28 on a training twin (seed 10000, N = 32,
        # 20 steps)
        ("FlowDAS proper · interpolant", "flowdas", {"flowdas_scale": 0.1}, None),
    ]
    return rows


def config(
    label: str, method: str, options: dict, emulator: str, particles: int, scale, setup: str = "c"
):
    return parse_config(
        {
            "name": f"l63-{setup}",
            "setup": f"l63-{setup}",
            "emulator": emulator,
            "emulator_options": dict(options),
            "filter": {"method": method, "particles": particles},
            "steps": scale.steps,
            "burn_in": scale.burn_in,
            "runs": scale.runs,
            "seed": 0,
            "save": "moments",
        }
    )


def passes_per_step(cfg, timed: int = 5) -> tuple[int, int, float]:
    """Forward and backward network passes of one filter step (batched calls, all particles),
    counted on the last linear layer of the network, from the ensemble after one step; and
    the median seconds of the ``timed`` steps that follow (one thread, this process: run
    the script on an idle machine for these to mean anything)."""
    setup = build_twin_setup(cfg)
    em = build_emulator(cfg, setup)
    # the output layer: every pass, forward or backward, goes through it
    first = [m for m in em.modules() if isinstance(m, torch.nn.Linear)][-1]
    count = {"fwd": 0, "bwd": 0}
    f = build_filter(cfg, em, setup, torch.Generator().manual_seed(0))
    twin = make_twin(setup, 0)
    ens = f.init(twin.initial_ensemble(cfg.filter.particles))
    ens, _ = f.step(ens, twin.observations[0])  # first step: all particles equal

    def on_forward(module, inputs, output):
        count["fwd"] += 1
        if output.requires_grad:  # every backward pass through the network passes here
            output.register_hook(lambda g: count.__setitem__("bwd", count["bwd"] + 1))

    h1 = first.register_forward_hook(on_forward)
    try:
        ens, _ = f.step(ens, twin.observations[1])
    finally:
        h1.remove()
    seconds = []
    for k in range(2, 2 + timed):
        t0 = time.perf_counter()
        ens, _ = f.step(ens, twin.observations[k])
        seconds.append(time.perf_counter() - t0)
    return count["fwd"], count["bwd"], statistics.median(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", choices=["a", "c"], default="c")
    p.add_argument("--out", default=None, help="default outputs/l63-emulator-variants[-a]")
    p.add_argument("--table1", default="outputs/l63-table1-full/cells")
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--passes-only", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    scale = SCALES["full"]
    suffix = "" if args.setup == "c" else f"-{args.setup}"
    out = Path(args.out or f"outputs/l63-emulator-variants{suffix}")
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "| row | skill | CRPS | spread | s / step | passes / step (fwd + bwd) |",
        "|---|---|---|---|---|---|",
    ]
    # the cells of their own first; those shared with Table 1 last (reused once it ran them)
    order = sorted(variants(), key=lambda v: v[3] is not None)
    for label, method, options, row in order:
        emulator = "shipped-interpolant" if "interpolant" in label else "shipped"
        cfg = config(label, method, options, emulator, args.particles, scale, args.setup)
        try:
            fwd, bwd, step_s = passes_per_step(cfg)
        except FloatingPointError as exc:  # a guided SDE that blows up is a result too
            lines.append(f"| {label} | diverged: {str(exc)[:90]} | | | | |")
            print(lines[-1], flush=True)
            continue
        if args.passes_only:
            lines.append(f"| {label} | | | | {step_s:.2f} | {fwd} + {bwd} |")
            print(lines[-1], flush=True)
            continue
        reuse = _cell_path(Path(args.table1), args.setup, row, args.particles) if row else None
        if reuse is not None and reuse.exists():
            path = reuse
        else:
            slug = "".join(c if c.isalnum() else "-" for c in label.lower())
            path = out / f"{slug}.nc"
            # resume=True: a finished cell of the same config is reused, a started one continues
            run_config(cfg, path, resume=True, progress=False, label=label)
        s = summarize_file(path)
        lines.append(
            f"| {label} | {s['skill']:.3f} ± {s['skill_se']:.3f} | {s['crps']:.3f} ± "
            f"{s['crps_se']:.3f} | {s['spread']:.3f} | {step_s:.2f} | {fwd} + {bwd} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))
    (out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
