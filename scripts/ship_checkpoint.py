"""Turns a training checkpoint into the small file shipped with the package: EMA weights
only (no optimiser / training state), stored in float16 (they are cast back to float32 on
load; the shipped file is validated as stored, by tests/emulators/test_shipped.py).

    .venv/bin/python scripts/ship_checkpoint.py TRAIN_CKPT OUT [--note TEXT]

The shipped Lorenz-63 emulator was made by (seed 0 everywhere):

    genfilter data lorenz63 --out data/lorenz63 --seed 0
    genfilter --threads 1 train lorenz63 --data data/lorenz63 --out checkpoints/lorenz63-train.pt \
        --epochs 30 --batch-size 512 --lr 1e-3 --seed 0
    python scripts/ship_checkpoint.py checkpoints/lorenz63-train.pt src/genfilter/checkpoints/lorenz63.pt
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train_ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--system", default=None, help="system name, if the training checkpoint does not record it"
    )
    args = parser.parse_args()
    ckpt = torch.load(args.train_ckpt, weights_only=True)
    state = {
        k: (v.half() if torch.is_floating_point(v) else v) for k, v in ckpt["state_dict"].items()
    }
    meta = dict(ckpt.get("meta", {}))
    if args.system is not None and "system" not in meta:
        import json

        from genfilter.systems.datasets import SYSTEMS

        entry = SYSTEMS[args.system]
        meta["system"] = args.system
        meta["system_kwargs"] = json.dumps(dict(entry.kwargs))
    meta["shipped_from"] = str(args.train_ckpt)
    meta["shipped_dtype"] = "float16"
    if args.note:
        meta["note"] = args.note
    hist = ckpt.get("history", {})
    small = {
        "format": ckpt["format"],
        "denoiser_config": ckpt["denoiser_config"],
        "emulator_config": ckpt["emulator_config"],
        "state_dict": state,
        "train_state": None,
        "history": {k: hist[k] for k in ("valid_epoch", "valid_loss") if k in hist},
        "meta": meta,
    }
    for key in ("family", "interpolant"):  # the emulator family (interpolant checkpoints)
        if key in ckpt:
            small[key] = ckpt[key]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    torch.save(small, tmp)
    os.replace(tmp, args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
