"""Navier–Stokes 64² filtering on one GPU (issues #12 item 5 and #14 item 4), with the 64²
emulator trained on an H200 (``benchmarks/artifacts/ns2d-64-gpu-fp16.pt``,
docs/results/ns_gpu.md).  Two parts, each writing markdown and JSON under ``--out``:

``perf``: one FA-APF step at N = 64 and 256 (coarsening 4, the library's default guidance,
32 diffusion steps): seconds per step (median of ``--steps`` steps after the first two, the
device synchronised around each), peak GPU memory of a step above what was allocated before
it, network passes per step counted on the denoiser (forward rows without graph, forward
rows with graph, rows of vector–Jacobian products, divided by N), the compute floor (each
kind of pass × the median time of one batched pass of that kind at N, measured in the same
process) and step / floor; the bootstrap PF's step for comparison.

``cell``: a short Table-2 cell through :func:`~genfilter.experiments.runner.run_config`
(the code path of ``genfilter filter --device cuda``): coarsening and subsampling by 4 (256
observed values each), noise std 0.115 (0.05 of the field's standard deviation 2.30),
all particles starting at the true initial state, N = 32, ``--runs`` twins × ``--cycles``
cycles; FA-APF, the FlowDAS-style ensemble, the bootstrap PF and the EnKF on the same twins.
Cells that would overrun ``--budget-s`` are skipped and listed as such. ``--levels``,
``--kinds`` and ``--methods`` make it a whole Table 2 (factors and strides 4, 8, 16;
``letkf`` among the methods first picks the LETKF's radius and inflation on a training twin,
seed 1000, of the first level, then uses them at every level; ``fa-apf-local`` is FA-APF
with localised weights of radius ``--localization``; ``--weights`` picks FA-APF's weights,
e.g. ``pooled``, and ``--ess-interval`` its ESS control interval). Every cell is a run file
under ``--out``/runs, resumed if it exists.

    python benchmarks/ns_gpu.py perf --device cuda --out /tmp/ns_gpu
    python benchmarks/ns_gpu.py cell --device cuda --out /tmp/ns_gpu --budget-s 240
    python benchmarks/ns_gpu.py perf --device cpu --sizes 4 --steps 1 --out /tmp/x  # rehearsal
    python benchmarks/ns_gpu.py floor --json outputs/ns_gpu_h200/perf.json --out /tmp/x
    # Table 2 at CPU scale on one core (docs/results/ns.md):
    python benchmarks/ns_gpu.py cell --device cpu --threads 1 --resolution 32 --emulator CKPT \
        --iterations 8 --particles 32 --cycles 8 --runs 2 --levels 4 8 16 \
        --methods fa-apf flowdas bpf enkf letkf --budget-s 8000 --out outputs/ns32-cell
    # one CPU core, the 32² CPU emulator (docs/results/ns.md):
    python benchmarks/ns_gpu.py perf --device cpu --threads 1 --sizes 32 --emulator CKPT \
        --resolution 32 --out outputs/ns32-perf
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import traceback
from pathlib import Path

import torch
from performance import pass_times, sync

EMULATOR = "benchmarks/artifacts/ns2d-64-gpu-fp16.pt"
NOISE_STD = 0.115
"""0.05 × the stationary field standard deviation 2.30 (the train split of the 64² GPU
dataset, docs/results/ns_gpu.md): the noise level of FlowDAS's Navier–Stokes experiments
(Chen et al. 2025, arXiv:2501.16642) in the units of the field."""


OPTIONS = {"emulator": EMULATOR, "resolution": 64}
"""The emulator and grid of every config (``--emulator``, ``--resolution``)."""


def config(
    method: str,
    n: int,
    operator: dict,
    *,
    cycles: int,
    runs: int,
    diffusion_steps: int,
    seed: int = 0,
    options: dict | None = None,
):
    from genfilter.experiments.config import parse_config

    level = operator.get("factor", operator.get("stride"))
    return parse_config(
        {
            "name": f"ns{OPTIONS['resolution']}-{operator['operator']}{level}",
            "system": "ns2d",
            "system_options": {"resolution": OPTIONS["resolution"]},
            "emulator": OPTIONS["emulator"],
            "emulator_options": {"steps": diffusion_steps, **OPTIONS.get("guidance", {})},
            "observations": {**operator, "noise_std": NOISE_STD},
            "initial": {"recipe": "perturbed", "std": 0.0, "spinup": 20.0},
            "filter": {"method": method, "particles": n, "options": dict(options or {})},
            "steps": cycles,
            "burn_in": min(2, cycles - 1),
            "runs": runs,
            "seed": seed,
            "save": "moments",
        }
    )


class Passes:
    """Rows through the denoiser while active: forward without graph, forward with graph,
    and backward (a hook on the denoiser's input counts the rows of every gradient that
    reaches it: one per vector–Jacobian product through the network; gradients that stop
    at the output, such as a product with the observation operator, are not counted)."""

    def __init__(self, denoiser) -> None:
        self.denoiser = denoiser
        self.rows = {"fwd": 0, "fwd_graph": 0, "bwd": 0}

    def __enter__(self):
        def on_backward(g):
            self.rows["bwd"] += int(g.shape[0])

        def hook(module, args, out):
            x = args[0]
            if torch.is_grad_enabled() and x.requires_grad:
                self.rows["fwd_graph"] += int(x.shape[0])
                x.register_hook(on_backward)
            else:
                self.rows["fwd"] += int(x.shape[0])

        self._hook = self.denoiser.register_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()


def build(method: str, n: int, device: torch.device, diffusion_steps: int):
    from genfilter.experiments.runner import build_emulator, build_filter, build_twin_setup
    from genfilter.experiments.twin import make_twin

    cfg = config(
        method,
        n,
        {"operator": "coarsen", "factor": OPTIONS.get("factor", 4)},
        cycles=8,
        runs=1,
        diffusion_steps=diffusion_steps,
    )
    setup = build_twin_setup(cfg)
    em = build_emulator(cfg, setup).to(device)
    f = build_filter(cfg, em, setup, torch.Generator().manual_seed(0))
    twin = make_twin(setup, 0)
    ens = f.init(twin.initial_ensemble(n).to(device))
    return f, ens, twin, em


def perf(args) -> None:
    device = torch.device(args.device)
    lines = [
        "| N | filter | s / step | peak memory of a step (GiB) | passes / step: fwd + fwd "
        "(graph) + bwd | floor (s) | step / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    results = []
    for n in args.sizes:
        for method in ("fa-apf", "bpf"):
            try:
                f, ens, twin, em = build(method, n, device, args.diffusion_steps)
                ens, _ = f.step(ens, twin.observations[0])  # all particles equal
                with Passes(em.denoiser) as counter:
                    ens, _ = f.step(ens, twin.observations[1])
                p = {k: v / n for k, v in counter.rows.items()}
                times, peaks = [], []
                for k in range(2, 2 + args.steps):
                    sync(device)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                        base = torch.cuda.memory_allocated(device)
                    t0 = time.perf_counter()
                    ens, _ = f.step(ens, twin.observations[k % len(twin.observations)])
                    sync(device)
                    times.append(time.perf_counter() - t0)
                    if device.type == "cuda":
                        peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2**30)
                s = statistics.median(times)
                pt = pass_times(em, n, reps=args.reps, device=device)
                floor = sum(p[key] * pt[key] for key in p)
                peak = max(peaks) if peaks else float("nan")
                row = {
                    "N": n,
                    "method": method,
                    "seconds_per_step": s,
                    "step_times": times,
                    "peak_gib": peak,
                    "passes": p,
                    "pass_seconds": pt,
                    "floor": floor,
                    "ratio": s / floor,
                }
                lines.append(
                    f"| {n} | {method} | {s:.3f} | {peak:.2f} | {p['fwd']:.0f} + "
                    f"{p['fwd_graph']:.0f} + {p['bwd']:.0f} | {floor:.3f} | {s / floor:.2f} |"
                )
            except Exception as exc:  # a failing cell is a result: record it and go on
                traceback.print_exc()
                row = {"N": n, "method": method, "error": f"{type(exc).__name__}: {exc}"}
                lines.append(f"| {n} | {method} | failed: {row['error'][:100]} | | | | |")
            results.append(row)
            print(lines[-1], flush=True)
            write(args.out, f"perf{args.tag}", lines, results, device, echo=False)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    write(args.out, f"perf{args.tag}", lines, results, device)


def floor(args) -> None:
    """Re-derives step / floor of a ``perf`` JSON (``--json``) with the passes counted here,
    on this machine's CPU at N = 2 (the passes per particle do not depend on the device or
    on N): the first GPU run's counter also counted the gradients that stop at the
    denoiser's output (the products with H of the observation-space Krylov solve)."""
    data = json.loads(Path(args.json).read_text())
    lines = [
        "| N | filter | s / step | peak memory (GiB) | passes / step: fwd + fwd (graph) + bwd "
        "| floor (s) | step / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    counted = {}
    for row in data["rows"]:
        if "error" in row:
            continue
        method = row["method"]
        if method not in counted:
            f, ens, twin, em = build(method, 2, torch.device("cpu"), args.diffusion_steps)
            ens, _ = f.step(ens, twin.observations[0])
            with Passes(em.denoiser) as counter:
                f.step(ens, twin.observations[1])
            counted[method] = {k: v / 2 for k, v in counter.rows.items()}
        p, pt, s = counted[method], row["pass_seconds"], row["seconds_per_step"]
        fl = sum(p[key] * pt[key] for key in p)
        row.update(passes=p, floor=fl, ratio=s / fl)
        lines.append(
            f"| {row['N']} | {method} | {s:.3f} | {row['peak_gib']:.2f} | {p['fwd']:.0f} + "
            f"{p['fwd_graph']:.0f} + {p['bwd']:.0f} | {fl:.3f} | {s / fl:.2f} |"
        )
    write(args.out, "floor", lines, data["rows"], torch.device("cpu"))


def option_tag(options: dict) -> str:
    """``-<key><value>`` for every filter option, a list's values joined by ``_``: the part
    of a run file's name that tells its options apart (``-ess_interval0.5_0.6``)."""
    parts = []
    for key, value in options.items():
        if isinstance(value, list | tuple):
            value = "_".join(f"{x:g}" for x in value)
        parts.append(f"-{key}{value}")
    return "".join(parts)


def cell(args) -> None:
    from genfilter.experiments.reporting import summarize_file
    from genfilter.experiments.runner import run_config

    device = torch.device(args.device)
    t_start = time.perf_counter()
    kinds = [("coarsen", "factor"), ("subsample", "stride")][: args.operators]
    if args.kinds:
        kinds = [k for k in (("coarsen", "factor"), ("subsample", "stride")) if k[0] in args.kinds]
    operators = [{"operator": k, key: level} for level in args.levels for k, key in kinds]
    lines = [
        "| observation | filter | skill | CRPS | spread | wall s |",
        "|---|---|---|---|---|---|",
    ]
    results = []
    spent: dict[str, float] = {}

    def one(method: str, op: dict, *, seed: int, runs: int, options: dict, folder: str):
        cfg = config(
            method,
            args.particles,
            op,
            cycles=args.cycles,
            runs=runs,
            diffusion_steps=args.diffusion_steps,
            seed=seed,
            options=options,
        )
        tag = option_tag(options)
        if args.mean_sigma is not None and method == "fa-apf":
            tag += f"-mean_sigma{args.mean_sigma:g}"
        path = Path(args.out) / folder / f"{cfg.name}-{method}{tag}-N{args.particles}.nc"
        path.parent.mkdir(parents=True, exist_ok=True)
        run_config(cfg, path, progress=False, device=device, resume=True)
        return summarize_file(path)

    letkf = {}
    if "letkf" in args.methods:
        letkf = tune_letkf(args, one, operators[0])
        lines.insert(
            0,
            f"LETKF: radius {letkf['radius']}, inflation {letkf['inflation']} "
            f"(best skill on {args.tune_runs} training twin(s), seed {TUNE_SEED})\n",
        )
    for op in operators:
        for method in args.methods:
            label = f"{op['operator']} {op.get('factor', op.get('stride'))}"
            elapsed = time.perf_counter() - t_start
            guess = spent.get(method, 0.0)
            if elapsed + guess > args.budget_s:
                lines.append(f"| {label} | {method} | skipped (time budget) | | | |")
                print(lines[-1], flush=True)
                continue
            t0 = time.perf_counter()
            options = letkf if method == "letkf" else {}
            if method == "fa-apf-local":  # localised weights, docs/method.md#localised-weights
                options = {"localization": args.localization}
            if method == "fa-apf" and args.weights is not None:
                options = {"weights": args.weights}
            if method == "fa-apf" and args.ess_interval is not None:
                options = {**options, "ess_interval": list(args.ess_interval)}
            try:
                s = one(
                    method.removesuffix("-local"),
                    op,
                    seed=args.seed,
                    runs=args.runs,
                    options=options,
                    folder="runs",
                )
                row = {"observation": label, "method": method, **options, **s}
                lines.append(
                    f"| {label} | {method} | {s['skill']:.3f} ± {s['skill_se']:.3f} | "
                    f"{s['crps']:.3f} ± {s['crps_se']:.3f} | {s['spread']:.3f} | "
                    f"{time.perf_counter() - t0:.0f} |"
                )
            except Exception as exc:
                traceback.print_exc()
                row = {
                    "observation": label,
                    "method": method,
                    "error": f"{type(exc).__name__}: {exc}",
                }
                lines.append(f"| {label} | {method} | failed: {row['error'][:100]} | | | |")
            spent[method] = time.perf_counter() - t0
            row["wall_seconds"] = spent[method]
            results.append(row)
            print(lines[-1], flush=True)
            write(args.out, f"cell{args.tag}", lines, results, device, echo=False)
    write(args.out, f"cell{args.tag}", lines, results, device)


TUNE_SEED = 1000
"""Seed of the training twins on which the LETKF's radius and inflation are chosen (the
scored twins use seed 0)."""


def tune_letkf(args, one, op: dict) -> dict:
    """The LETKF's radius (grid cells, Gaspari–Cohn) and multiplicative inflation with the
    best skill on ``--tune-runs`` training twins of the first observation level; the same
    pair is then used at every level."""
    best, table = None, []
    for radius in args.letkf_radii:
        for inflation in args.letkf_inflations:
            options = {"radius": radius, "inflation": inflation}
            s = one(
                "letkf", op, seed=TUNE_SEED, runs=args.tune_runs, options=options, folder="tune"
            )
            table.append({**options, "skill": s["skill"]})
            print(f"LETKF tuning {options}: skill {s['skill']:.3f}", flush=True)
            if best is None or s["skill"] < best[1]:
                best = (options, s["skill"])
    Path(args.out, "letkf_tuning.json").write_text(json.dumps(table, indent=1))
    return best[0]


def write(
    out: str, name: str, lines: list[str], results: list, device: torch.device, echo: bool = True
) -> None:
    env = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}.md").write_text("\n".join(lines) + "\n")
    (Path(out) / f"{name}.json").write_text(
        json.dumps({"env": env, "rows": results}, indent=1, default=float)
    )
    if echo:
        print("\n".join(lines))


def main() -> None:
    from genfilter.filters.fa_apf import WEIGHTS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["perf", "cell", "floor"])
    p.add_argument("--json", default="outputs/ns_gpu_h200/perf.json", help="floor: perf JSON")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="outputs/ns_gpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--steps", type=int, default=3, help="perf: timed filter steps")
    p.add_argument("--reps", type=int, default=10, help="perf: timed passes of each kind")
    p.add_argument("--diffusion-steps", type=int, default=32)
    p.add_argument("--particles", type=int, default=32, help="cell: N")
    p.add_argument("--cycles", type=int, default=10, help="cell: assimilation cycles")
    p.add_argument("--runs", type=int, default=2, help="cell: twins")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="cell: twin seed of the first run (run r is the twin of seed + r, as in every "
        "config: --seed 2 --runs 1 is the third twin of a --runs 3 table)",
    )
    p.add_argument("--budget-s", type=float, default=240.0, help="cell: time budget")
    p.add_argument(
        "--operators", type=int, default=2, help="cell: coarsening (1) + subsampling (2)"
    )
    p.add_argument(
        "--kinds", nargs="+", choices=["coarsen", "subsample"], help="cell: instead of --operators"
    )
    p.add_argument("--levels", type=int, nargs="+", default=[4], help="cell: factors/strides")
    p.add_argument(
        "--methods", nargs="+", default=["bpf", "enkf", "fa-apf", "flowdas"], help="cell: filters"
    )
    p.add_argument(
        "--localization", type=float, default=8.0, help="cell: radius of method fa-apf-local"
    )
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default=None,
        help="cell: FA-APF's weights (docs/method.md#fa-apf-weights; default: the filter's, dirac)",
    )
    p.add_argument(
        "--ess-interval",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="cell: FA-APF's ESS control interval as fractions of N (default: the filter's, "
        "50/256 to 60/256)",
    )
    p.add_argument("--letkf-radii", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    p.add_argument("--letkf-inflations", type=float, nargs="+", default=[1.0, 1.1])
    p.add_argument("--tune-runs", type=int, default=1, help="cell: LETKF training twins")
    p.add_argument("--tag", default="", help="suffix of the output files")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--emulator", default=EMULATOR, help="checkpoint of the ns2d emulator")
    p.add_argument("--resolution", type=int, default=64, help="grid of the emulator")
    p.add_argument("--factor", type=int, default=4, help="perf: coarsening factor")
    p.add_argument("--iterations", type=int, default=None, help="Krylov dimension of the guidance")
    p.add_argument(
        "--mean-sigma",
        type=float,
        default=None,
        help="FA-APF's predictive mean: the fixed point at this noise level (emulator option "
        "mean_sigma; default: the paper's one denoiser call at t = 1)",
    )
    args = p.parse_args()
    OPTIONS.update(emulator=args.emulator, resolution=args.resolution, factor=args.factor)
    OPTIONS["guidance"] = {}
    if args.iterations is not None:
        OPTIONS["guidance"]["iterations"] = args.iterations
    if args.mean_sigma is not None:
        OPTIONS["guidance"]["mean_sigma"] = args.mean_sigma
    torch.set_num_threads(args.threads)
    if math.isfinite(args.budget_s) and args.budget_s <= 0:
        raise SystemExit("--budget-s must be positive")
    {"perf": perf, "cell": cell, "floor": floor}[args.part](args)


if __name__ == "__main__":
    main()
