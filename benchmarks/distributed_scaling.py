"""Multi-process scaling of FA-APF on Lorenz-63 setup (a) with the shipped emulator:
one process against two gloo processes (one CPU thread each), N = 256 and 1024.

For each N the script runs the same twin, seed and steps in one process (no process
group) and in P processes (the environment torchrun sets), then prints per N:

* seconds per filter step (mean over the steps after the first, which skips the
  weights), speed-up = t(1) / t(P) and efficiency = speed-up / P;
* the communication share of a step on rank 0: time in all-gathers and particle exchanges
  (``ParticleShards.comm_seconds``, which includes waiting for the slower rank) over the
  step time, and the particles that changed rank per step (all ranks);
* whether the P-process run is bit-identical to the one-process run (particles, weights,
  ESS, inflation, log-evidence, metrics).

Usage::

    python benchmarks/distributed_scaling.py [--sizes 256 1024] [--steps 4] [--procs 2]

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


def worker(n: int, steps: int, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from genfilter._utils import make_generator
    from genfilter.distributed import ParticleShards, init_from_env, is_main
    from genfilter.experiments.config import load_config
    from genfilter.experiments.runner import (
        build_emulator,
        build_filter,
        build_twin_setup,
        run_seed,
    )
    from genfilter.experiments.twin import make_twin
    from genfilter.filters.base import assimilate

    multi = init_from_env()
    cfg = load_config(ROOT / "configs" / "l63-a.yaml", particles=n, steps=steps, burn_in=0)
    setup = build_twin_setup(cfg)
    emulator = build_emulator(cfg, setup)
    twin_seed, filter_seed = run_seed(cfg, 0)
    twin = make_twin(setup, twin_seed)
    filt = build_filter(cfg, emulator, setup, make_generator(filter_seed))
    shards = ParticleShards(n) if multi else None
    t0 = time.perf_counter()
    run = assimilate(
        filt,
        twin.initial_ensemble(n),
        twin.observations,
        truth=twin.truth,
        progress=False,
        distributed=shards if multi else False,
    )
    wall = time.perf_counter() - t0
    moved = torch.tensor([shards.moved if shards else 0])
    if multi:  # particles received by every rank together
        torch.distributed.all_reduce(moved)
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
                }
            )
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(n: int, steps: int, procs: int, out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    env["MASTER_PORT"] = str(_free_port())
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", str(n), str(steps), str(out)]
    ps = []
    for r in range(procs):
        e = dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(procs))
        ps.append(subprocess.Popen(cmd, env=e, cwd=ROOT))
    for p in ps:
        if p.wait() != 0:
            raise SystemExit(f"worker failed (N = {n}, {procs} processes)")
    return json.loads(out.read_text())


def identical(a: Path, b: Path) -> bool:
    import torch

    x, y = torch.load(a), torch.load(b)
    same = all(torch.equal(x[k], y[k]) for k in ("particles", "log_weights"))
    same &= all(torch.equal(x["metrics"][k], y["metrics"][k]) for k in x["metrics"])
    return bool(same and x["infos"] == y["infos"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), int(args.worker[1]), Path(args.worker[2]))
        return
    P = args.procs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            one = launch(n, args.steps, 1, Path(tmp) / f"n{n}-p1.json")
            many = launch(n, args.steps, P, Path(tmp) / f"n{n}-p{P}.json")
            t1 = sum(one["seconds"][1:]) / (len(one["seconds"]) - 1)
            tp = sum(many["seconds"][1:]) / (len(many["seconds"]) - 1)
            same = identical(Path(tmp) / f"n{n}-p1.pt", Path(tmp) / f"n{n}-p{P}.pt")
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
                )
            )
            print(f"N = {n}: done", file=sys.stderr)
    print(
        f"\nFA-APF, Lorenz-63 setup (a), shipped emulator, {args.steps} steps "
        f"(mean over steps 2..{args.steps}), 1 thread per process\n"
    )
    print(
        f"| N | 1 process (s/step) | {P} processes (s/step) | speed-up | efficiency "
        "| communication share | particles moved / step | bit-identical |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, t1, tp, s, e, c, m, same in rows:
        print(
            f"| {n} | {t1:.3f} | {tp:.3f} | {s:.2f}x | {e:.0%} | {c:.1%} | {m:.1f} "
            f"| {'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
