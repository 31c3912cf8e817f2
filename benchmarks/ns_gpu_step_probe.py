"""Measures the time per optimisation step of the NS emulator's training loop on a device
(the real loop: ``train_emulator`` with the ``genfilter train ns2d`` network and options, on
synthetic pairs; the step cost does not depend on the values).  For each batch size: two
epochs of ``--steps`` steps; the second (warm: cuDNN autotuning and allocations done) is
timed from ``history["seconds"]``.  Used by scripts/gpu_ns64.sh to set the number of epochs.

    python benchmarks/ns_gpu_step_probe.py --device cuda --batch-sizes 64 128 256 --json p.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from genfilter.emulators.networks import build_denoiser_from_config, denoiser_config
from genfilter.emulators.training import TrainingConfig, train_emulator
from genfilter.systems.datasets import SYSTEMS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--steps", type=int, default=20, help="steps per epoch (two epochs)")
    p.add_argument("--quick", action="store_true", help="the --quick U-Net (tests)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: what `genfilter train` uses by default)",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    d = SYSTEMS["ns2d"].training
    net = dict(d["net"], **({"quick": True} if args.quick else {}))
    cfg = denoiser_config(d["kind"], (args.resolution, args.resolution), **net)
    cuda = args.device.startswith("cuda")
    rows = []
    g = torch.Generator().manual_seed(0)
    for bs in args.batch_sizes:
        n = bs * args.steps
        x_prev = 2.4 * torch.randn(n, args.resolution, args.resolution, generator=g)
        x_next = x_prev + 1.4 * torch.randn(n, args.resolution, args.resolution, generator=g)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = train_emulator(
            x_prev,
            x_next,
            denoiser_config=cfg,
            residual=d["residual"],
            stats=d["stats"],
            config=TrainingConfig(
                epochs=2, batch_size=bs, lr=1e-3, lr_schedule="cosine", device=args.device
            ),
            progress=False,
        )
        wall = time.perf_counter() - t0
        warm = res.history["seconds"][1]
        row = {
            "batch_size": bs,
            "steps_timed": args.steps,
            "seconds_per_step": warm / args.steps,
            "ms_per_sample": 1e3 * warm / n,
            "first_epoch_seconds": res.history["seconds"][0],
            "wall_seconds": wall,
        }
        if cuda:
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        rows.append(row)
        print(json.dumps(row))
        del res
    out = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "parameters": sum(q.numel() for q in build_denoiser_from_config(cfg).parameters()),
        "denoiser_config": cfg,
        "rows": rows,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
