"""Small steps of scripts/gpu_ns64.sh (the one GPU run of the 64² Navier–Stokes emulator,
docs/results/ns_gpu.md), kept out of the shell script so that each can be tested on the CPU:

    smoke DEVICE RES            the NS integrator, an untrained emulator's sampling and the
                                one-step / rollout validation on DEVICE, at toy sizes
    epochs DATA PROBE BATCH SECONDS [MAX]
                                epochs that fit SECONDS of training, from the measured step time
    export TRAIN_CKPT OUT       EMA weights in float32 with the full history (no optimiser)
    summary OUT WORK            collects the timings into OUT/summary.json
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch


def smoke(device: str, resolution: int) -> None:
    from genfilter.emulators.networks import build_denoiser_from_config, denoiser_config
    from genfilter.emulators.training import _emulator_from
    from genfilter.emulators.validation import one_step_validation, rollout_validation
    from genfilter.systems.datasets import make_system

    t0 = time.perf_counter()
    system = make_system("ns2d", resolution=resolution)
    g = torch.Generator().manual_seed(0)
    x = system.random_field(2, g).to(device)
    y = system.step(x, 1, g)
    assert y.device == x.device and torch.isfinite(y).all(), "NS step on the device failed"
    cfg = denoiser_config("unet", (resolution, resolution), quick=True)
    den = build_denoiser_from_config(cfg).to(device)  # as load_emulator does
    em = _emulator_from(
        den,
        {
            "state_shape": [resolution, resolution],
            "mean": 0.0,
            "std": 2.4,
            "residual": True,
            "residual_std": 0.6,
        },
        steps=2,
    ).to(device)
    em.eval().requires_grad_(False)
    one = one_step_validation(em, system, y[:1], samples=4, generator=g)
    roll = rollout_validation(em, system, y, length=2, generator=g)
    print(
        f"smoke on {device}: NS step, emulator sample, one-step (ED {one.energy_distance:.3f}, "
        f"floor {one.energy_distance_floor:.3f}) and rollout (finite {roll.finite}) ran in "
        f"{time.perf_counter() - t0:.1f} s"
    )


def epochs(data: str, probe: str, batch: int, seconds: float, most: int = 100000) -> None:
    from genfilter.systems.datasets import DatasetSpec, load_stats

    stats = load_stats(data)
    spec = DatasetSpec.from_dict(stats["spec"])
    n_train = stats["trajectories"] * (stats["snapshots_per_trajectory"] - 1)
    n_valid = spec.split_sizes()[1] * (spec.length - 1)
    rows = {r["batch_size"]: r for r in json.loads(Path(probe).read_text())["rows"]}
    step = rows[batch]["seconds_per_step"]
    train_steps = math.ceil(n_train / batch)
    valid_batches = math.ceil(n_valid / batch)
    per_epoch = step * (train_steps + 0.4 * valid_batches)  # validation: forward only
    fixed = 20.0 + n_train * 2e-4  # start, data loading and statistics, final saves (guess)
    n = max(1, min(most, int(0.9 * (seconds - fixed) / per_epoch)))
    print(
        json.dumps(
            {
                "epochs": n,
                "n_train": n_train,
                "n_valid": n_valid,
                "steps_per_epoch": train_steps,
                "seconds_per_step": step,
                "predicted_seconds_per_epoch": per_epoch,
                "budget_seconds": seconds,
            }
        ),
        file=sys.stderr,
    )
    print(n)


def export(train_ckpt: str, out: str) -> None:
    from genfilter.emulators.training import _atomic_save, load_checkpoint

    ckpt = load_checkpoint(train_ckpt)
    small = {k: ckpt[k] for k in ("format", "denoiser_config", "emulator_config", "state_dict")}
    small.update(
        train_state=None,
        history=ckpt.get("history", {}),
        meta={
            **ckpt.get("meta", {}),
            "exported_from": str(train_ckpt),
            "exported": "EMA weights float32, no optimiser state",
        },
    )
    _atomic_save(small, Path(out))
    print(f"{out}: {Path(out).stat().st_size / 2**20:.2f} MiB")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def summary(out: str, work: str) -> None:
    out_p, work_p = Path(out), Path(work)
    s: dict = {"phases": {}}
    phases = work_p / "phases.txt"
    if phases.exists():
        for line in phases.read_text().splitlines():
            name, secs, rc = line.split()
            s["phases"][name] = {"seconds": float(secs), "rc": int(rc)}
    for name in ("env.json", "epochs.json"):
        p = work_p / name
        if p.exists():
            lines = [ln for ln in p.read_text().splitlines() if ln.startswith("{")]
            if lines:  # the last JSON line (other lines may be warnings)
                s[name.removesuffix(".json")] = json.loads(lines[-1])
    for name in ("data_timings.json", "probe.json"):
        p = out_p / name
        if p.exists():
            s[name.removesuffix(".json")] = json.loads(p.read_text())
    ckpt_path = work_p / "ns2d_gpu.pt"
    if ckpt_path.exists():
        from genfilter.emulators.training import load_checkpoint

        ckpt = load_checkpoint(ckpt_path)
        h, meta = ckpt["history"], ckpt["meta"]
        secs = h.get("seconds", [])
        steps = int(meta.get("steps", 0))
        n_train = int(meta.get("n_train", 0))
        batch = ckpt["train_state"]["config"]["batch_size"] if ckpt.get("train_state") else None
        s["training"] = {
            "epochs_planned": meta.get("epochs"),
            "epochs_done": meta.get("epochs_done"),
            "steps": steps,
            "batch_size": batch,
            "n_train": n_train,
            "n_valid": meta.get("n_valid"),
            "seconds_in_epochs": sum(secs),
            "steps_per_second": steps / sum(secs) if secs else None,
            "pairs_per_second": steps * (batch or 0) / sum(secs) if secs else None,
            "seconds_per_epoch_first_last": [secs[0], secs[-1]] if secs else None,
            "train_loss_first_last": [h["train_loss"][0], h["train_loss"][-1]]
            if h.get("train_loss")
            else None,
            "valid_loss": dict(zip(h.get("valid_epoch", []), h.get("valid_loss", []))),
            "valid_loss_min": min(h["valid_loss"]) if h.get("valid_loss") else None,
            "config": ckpt["train_state"]["config"] if ckpt.get("train_state") else None,
            "meta": {k: v for k, v in meta.items() if k != "versions"},
            "versions": meta.get("versions"),
            "parameters": sum(
                v.numel() for v in ckpt["state_dict"].values() if torch.is_floating_point(v)
            ),
        }
        s["checkpoints"] = {
            "train (not returned)": {
                "path": str(ckpt_path),
                "MiB": ckpt_path.stat().st_size / 2**20,
                "sha256_16": _sha(ckpt_path),
            }
        }
    for p in sorted(out_p.glob("*.pt")):
        s.setdefault("checkpoints", {})[p.name] = {
            "MiB": p.stat().st_size / 2**20,
            "sha256_16": _sha(p),
        }
    (out_p / "summary.json").write_text(json.dumps(s, indent=1, default=str))
    print(json.dumps({k: s[k] for k in ("phases", "checkpoints") if k in s}, indent=1))
    if "training" in s:
        t = s["training"]
        print(
            f"training: {t['epochs_done']} epochs, {t['steps']} steps, "
            f"{t['steps_per_second']:.2f} steps/s, {t['pairs_per_second']:.0f} pairs/s; "
            f"valid loss min {t['valid_loss_min']:.4f}"
        )


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    if cmd == "smoke":
        smoke(rest[0], int(rest[1]))
    elif cmd == "epochs":
        epochs(rest[0], rest[1], int(rest[2]), float(rest[3]), *(int(r) for r in rest[4:5]))
    elif cmd == "export":
        export(rest[0], rest[1])
    elif cmd == "summary":
        summary(rest[0], rest[1])
    else:
        raise SystemExit(f"unknown step {cmd!r}")
