"""Makes the dataset that ``genfilter data ns2d`` makes, faster: the trajectories are
integrated on a GPU in one batch (``--device cuda``), or chunk by chunk in parallel CPU
processes (``--workers N``); then ``generate_dataset`` merges the chunk files exactly as
``genfilter data`` does (same spec, same seeding, same files: train/valid/test.nc,
stats.json).  Used by scripts/gpu_ns64.sh (docs/results/ns_gpu.md).

Same numbers as ``genfilter data``?  With ``--workers`` (CPU): the same code
(``datasets._integrate_chunk``) per chunk, so the same data as a serial run on the same
machine.  With ``--device cuda``: the same noise streams (one CPU generator per trajectory,
``SeedSequence(seed, spawn_key=(0, i))``, drawn interval by interval exactly as
``_integrate_chunk`` draws them) and the same scheme, but the FFTs and products run on the
GPU, so the fields differ from a CPU run by rounding, which the chaotic flow amplifies over
the burn-in: the same law, not the same numbers.  The chunk files record
``integrated_on``.

    python benchmarks/ns_data_device.py --out data/ns64 --trajectories 256 --device cuda \
        [--length 100 --resolution 64 --seed 0 --budget-s 120 --timings t.json]
    python benchmarks/ns_data_device.py --out /tmp/ns32 --resolution 32 --trajectories 6 \
        --length 5 --burn-in 1 --workers 2
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from genfilter.systems import datasets as D


def _integrate_batch(
    spec: D.DatasetSpec,
    indices: range,
    device: str,
    budget_s: float | None,
    min_keep: int,
    log=print,
) -> tuple[np.ndarray, dict]:
    """``_integrate_chunk`` for all ``indices`` at once on ``device``.  If after a few
    intervals the projected time exceeds ``budget_s``, only the first rows are kept (the
    first n trajectories of a dataset are those of the smaller dataset with the same seed)."""
    system = spec.make_system()
    generators = [D._trajectory_generator(spec.seed, i) for i in indices]
    n_burn = math.ceil(spec.burn_in / system.interval - 1e-9)
    total = n_burn + spec.length - 1
    info: dict = {"intervals": total, "requested": len(generators)}
    t0 = time.perf_counter()
    with torch.no_grad():
        x = torch.cat(
            [system.attractor_states(1, g, burn_in=0.0, dtype=torch.float32) for g in generators]
        ).to(device)
        out = torch.empty((len(generators), spec.length, *system.state_shape))
        for k in range(total):
            if k >= n_burn:
                out[:, k - n_burn] = x.cpu()
            noises = [system.draw_noise(1, generator=g, dtype=x.dtype) for g in generators]
            noise = None if noises[0] is None else torch.cat(noises).to(device)
            x = system.advance(x, noise)
            if device.startswith("cuda") and k in (0, 5):
                torch.cuda.synchronize()
            if k == 0:  # the first interval pays for CUDA / FFT-plan set-up: not projected
                t1 = time.perf_counter()
                info["seconds_first_interval"] = t1 - t0
            if k == 5:
                per = (time.perf_counter() - t1) / 5
                info["seconds_per_interval_2to6"] = per
                projected = (time.perf_counter() - t0) + per * (total - 6)
                log(
                    f"  {len(generators)} trajectories: {per:.3f} s per interval, projected "
                    f"{projected:.0f} s for {total} intervals"
                )
                if budget_s is not None and projected > budget_s and len(generators) > min_keep:
                    keep = max(min_keep, int(len(generators) * budget_s / projected))
                    log(f"  over the budget of {budget_s:.0f} s: keeping the first {keep}")
                    generators, x, out = generators[:keep], x[:keep], out[:keep]
        out[:, -1] = x.cpu()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    info["seconds"] = time.perf_counter() - t0
    info["kept"] = len(generators)
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).flatten(1).any(1).nonzero().flatten()
        raise FloatingPointError(f"trajectories {[int(b) for b in bad[:5]]} became non-finite")
    return out.numpy(), info


def _cpu_chunk(args) -> tuple[int, float]:
    spec_dict, i, sl, path = args
    torch.set_num_threads(1)
    spec = D.DatasetSpec.from_dict(spec_dict)
    t0 = time.perf_counter()
    state = D._integrate_chunk(spec, range(sl[0], sl[1]))
    n_chunks = len(spec.chunk_slices())
    ds = D._to_dataset(
        spec,
        state,
        np.arange(sl[0], sl[1]),
        {"chunk_index": i, "chunk_count": n_chunks, "integrated_on": "cpu"},
    )
    D._write_atomic(ds, Path(path))
    return i, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--trajectories", type=int, default=64)
    p.add_argument("--length", type=int, default=None)
    p.add_argument("--burn-in", type=float, default=None)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cuda: one batch on the GPU")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="CPU: chunks in this many processes (0: one batch in this process)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="one-batch mode: keep fewer trajectories if projected over this",
    )
    p.add_argument("--min-trajectories", type=int, default=64)
    p.add_argument("--timings", type=Path, default=None, help="JSON file for the timings")
    args = p.parse_args()

    t_start = time.perf_counter()
    spec = D.DatasetSpec(
        "ns2d",
        system_kwargs={"resolution": args.resolution},
        trajectories=args.trajectories,
        length=args.length,
        burn_in=args.burn_in,
        seed=args.seed,
        chunk=args.chunk,
    )
    out = args.out
    chunk_dir = out / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    timings: dict = {"device": args.device, "workers": args.workers, "torch": torch.__version__}
    if args.workers > 0:
        slices = spec.chunk_slices()
        jobs = [
            (spec.to_dict(), i, (sl.start, sl.stop), str(chunk_dir / f"chunk_{i:04d}.nc"))
            for i, sl in enumerate(slices)
        ]
        with ProcessPoolExecutor(args.workers) as pool:
            per_chunk = dict(pool.map(_cpu_chunk, jobs))
        timings["chunk_seconds"] = [per_chunk[i] for i in range(len(slices))]
    else:
        state, info = _integrate_batch(
            spec,
            range(spec.trajectories),
            args.device,
            args.budget_s,
            min(args.min_trajectories, spec.trajectories),
        )
        timings.update(info)
        if info["kept"] < spec.trajectories:
            spec = D.DatasetSpec.from_dict({**spec.to_dict(), "trajectories": info["kept"]})
            state = state[: info["kept"]]
        slices = spec.chunk_slices()
        for i, sl in enumerate(slices):
            ds = D._to_dataset(
                spec,
                state[sl],
                np.arange(sl.start, sl.stop),
                {"chunk_index": i, "chunk_count": len(slices), "integrated_on": args.device},
            )
            D._write_atomic(ds, chunk_dir / f"chunk_{i:04d}.nc")
    t_int = time.perf_counter()
    D.generate_dataset(spec, out, progress=False)  # finds every chunk done: merges only
    t_end = time.perf_counter()
    timings.update(
        spec=spec.to_dict(),
        integrate_seconds=t_int - t_start,
        merge_seconds=t_end - t_int,
        total_seconds=t_end - t_start,
        field_intervals=spec.trajectories
        * (math.ceil(spec.burn_in / spec.make_system().interval - 1e-9) + spec.length - 1),
    )
    print(D.describe(out))
    print(
        f"integrated in {t_int - t_start:.1f} s ({args.device}, workers {args.workers}), "
        f"merged in {t_end - t_int:.1f} s"
    )
    if args.timings is not None:
        args.timings.write_text(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main()
