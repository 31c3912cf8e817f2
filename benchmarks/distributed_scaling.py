"""Multi-process scaling of FA-APF on Lorenz-63 setup (a) with the shipped emulator:
one process against two gloo processes (one CPU thread each), N = 256 and 1024 — or on any
config (``--config``) and device (``--device cuda``: several processes may share one GPU,
then they talk through gloo).

For each N the script runs the same twin, seed and steps in one process (no process
group) and in P processes (the environment torchrun sets), then prints per N:

* seconds per filter step (mean over the steps after the first, which skips the
  weights), speed-up = t(1) / t(P) and efficiency = speed-up / P;
* the communication share of a step on rank 0: time in all-gathers and particle exchanges
  (``ParticleShards.comm_seconds``, which includes waiting for the slower rank) over the
  step time, and the particles that changed rank per step (all ranks);
* whether the P-process run is bit-identical to the one-process run (particles, weights,
  ESS, inflation, log-evidence, metrics), and otherwise the largest differences (on GPUs
  kernels may depend on the batch size);
* on CUDA, the peak GPU memory of each process.

Usage::

    python benchmarks/distributed_scaling.py [--sizes 256 1024] [--steps 4] [--procs 2]
    python benchmarks/distributed_scaling.py --config cfg.yaml --device cuda --threads 4

Needs P free CPU cores: timings on a busy machine measure the contention, not genfilter.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(n: int, steps: int, out: Path, config: str, device: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from genfilter._utils import make_generator
    from genfilter.distributed import ParticleShards, init_from_env, is_main
    from genfilter.experiments.config import load_config
    from genfilter.experiments.runner import (
        _to_cpu,
        build_emulator,
        build_filter,
        build_twin_setup,
        run_seed,
    )
    from genfilter.experiments.twin import make_twin
    from genfilter.filters.base import assimilate

    multi = init_from_env(device=device)
    dev = torch.device(device)
    cfg = load_config(config, particles=n, steps=steps, burn_in=0, runs=1)
    setup = build_twin_setup(cfg)
    emulator = build_emulator(cfg, setup)
    if dev.type != "cpu":
        emulator = emulator.to(dev)
        torch.cuda.reset_peak_memory_stats()
    twin_seed, filter_seed = run_seed(cfg, 0)
    twin = make_twin(setup, twin_seed)
    filt = build_filter(cfg, emulator, setup, make_generator(filter_seed))
    shards = ParticleShards(n) if multi else None
    t0 = time.perf_counter()
    run = assimilate(
        filt,
        twin.initial_ensemble(n).to(dev),
        twin.observations,
        truth=twin.truth.to(dev),
        progress=False,
        distributed=shards if multi else False,
    )
    wall = time.perf_counter() - t0
    run = _to_cpu(run) if dev.type != "cpu" else run
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
    moved = torch.tensor([shards.moved if shards else 0])
    peaks = torch.tensor([peak])
    if multi:  # particles received by every rank together; the largest peak memory
        torch.distributed.all_reduce(moved)
        torch.distributed.all_reduce(peaks, op=torch.distributed.ReduceOp.MAX)
    if is_main():
        seconds = [i.seconds for i in run.infos]
        torch.save(
            {
                "particles": run.particles,
                "log_weights": run.log_weights,
                "metrics": run.metrics,
                "infos": [(i.ess, i.inflation, i.log_evidence) for i in run.infos],
            },
            out.with_suffix(".pt"),
        )
        out.write_text(
            json.dumps(
                {
                    "seconds": seconds,
                    "wall": wall,
                    "comm": shards.comm_seconds if shards else 0.0,
                    "moved": int(moved),
                    "peak_gib": float(peaks),
                }
            )
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(n: int, steps: int, procs: int, out: Path, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MASTER_ADDR="127.0.0.1")
    env["MASTER_PORT"] = str(_free_port())
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", str(n), str(steps), str(out)]
    cmd += ["--config", str(args.config), "--device", args.device, "--threads", str(args.threads)]
    ps = []
    for r in range(procs):
        e = dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(procs))
        e.update(LOCAL_WORLD_SIZE=str(procs))
        ps.append(subprocess.Popen(cmd, env=e, cwd=ROOT))
    for p in ps:
        if p.wait() != 0:
            raise SystemExit(f"worker failed (N = {n}, {procs} processes)")
    return json.loads(out.read_text())


def compare(a: Path, b: Path) -> tuple[bool, float, float]:
    """Whether two runs are bit-identical; the largest absolute difference of the final
    particles and of the per-step skill."""
    import torch

    x, y = torch.load(a), torch.load(b)
    same = all(torch.equal(x[k], y[k]) for k in ("particles", "log_weights"))
    same &= all(torch.equal(x["metrics"][k], y["metrics"][k]) for k in x["metrics"])
    dp = (x["particles"] - y["particles"]).abs().max().item()
    ds = (x["metrics"]["skill"] - y["metrics"]["skill"]).abs().max().item()
    return bool(same and x["infos"] == y["infos"]), dp, ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--config", default=str(ROOT / "configs" / "l63-a.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        n, steps, out = int(args.worker[0]), int(args.worker[1]), Path(args.worker[2])
        worker(n, steps, out, args.config, args.device, args.threads)
        return
    P = args.procs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            one = launch(n, args.steps, 1, Path(tmp) / f"n{n}-p1.json", args)
            many = launch(n, args.steps, P, Path(tmp) / f"n{n}-p{P}.json", args)
            t1 = sum(one["seconds"][1:]) / (len(one["seconds"]) - 1)
            tp = sum(many["seconds"][1:]) / (len(many["seconds"]) - 1)
            same, dp, ds = compare(Path(tmp) / f"n{n}-p1.pt", Path(tmp) / f"n{n}-p{P}.pt")
            rows.append(
                (
                    n,
                    t1,
                    tp,
                    t1 / tp,
                    t1 / tp / P,
                    many["comm"] / sum(many["seconds"]),
                    many["moved"] / args.steps,
                    same,
                    dp,
                    ds,
                    one["peak_gib"],
                    many["peak_gib"],
                )
            )
            print(f"N = {n}: done", file=sys.stderr)
    print(
        f"\n{Path(args.config).name} (filter of the config), device {args.device}, "
        f"{args.steps} steps (mean over steps 2..{args.steps}), "
        f"{args.threads} thread(s) per process\n"
    )
    cuda = args.device.startswith("cuda")
    mem = f" | peak GPU GiB, 1 / {P} processes" if cuda else ""
    print(
        f"| N | 1 process (s/step) | {P} processes (s/step) | speed-up | efficiency "
        f"| communication share | particles moved / step | bit-identical "
        f"| max abs diff: particles, skill{mem} |"
    )
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if cuda else ""))
    for n, t1, tp, s, e, c, m, same, dp, ds, g1, gp in rows:
        print(
            f"| {n} | {t1:.3f} | {tp:.3f} | {s:.2f}x | {e:.0%} | {c:.1%} | {m:.1f} "
            f"| {'yes' if same else 'no'} | {dp:.2e}, {ds:.2e}"
            + (f" | {g1:.2f} / {gp:.2f} |" if cuda else " |")
        )


if __name__ == "__main__":
    main()
