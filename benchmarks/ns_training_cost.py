"""Training cost of the default Navier–Stokes U-Net emulator at 64 × 64, and an ESTIMATE of
its GPU training time (the project's target: under 1 h at 64²; docs/systems.md).

Measured here (CPU, one torch thread):

* parameters of ``denoiser_config("unet", (64, 64))`` (the network `genfilter train ns2d`
  builds without ``--quick``);
* wall time of one training step (the denoising loss ``denoising_loss``, Savary, Rozet &
  Louppe 2026, Eq. 14, docs/method.md#diffusion-emulator; + backward + grad clip
  + AdamW step, exactly the operations of ``train_emulator``), per sample, for a few batch
  sizes;
* FLOPs per sample of the forward and of forward + backward, counted with
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls; element-wise ops,
  normalisations and activations are NOT counted by it);
* bytes of every tensor produced by every aten op during forward + backward (a
  ``TorchDispatchMode``), a proxy for the memory traffic of the element-wise work the FLOP
  count misses.

Estimated, NOT measured (no GPU was used): the GPU training time for a stated number of
samples under a stated, conservative fraction of a stated GPU's peak throughput and memory
bandwidth (``--gpu``, ``--compute-efficiency``, ``--bandwidth-efficiency``) and a per-op
launch overhead (``--op-overhead-us``, ``--gpu-batch-size``); the estimate is the larger of
the compute-bound and the memory-bound time plus that overhead.  The assumptions are printed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ns_training_cost.py \
        [--batch-sizes 1 8 32] [--trajectories 64 --snapshots 100 --epochs 200]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from genfilter.emulators.networks import build_denoiser_from_config, denoiser_config
from genfilter.emulators.training import denoising_loss

# Dense peak throughput (no sparsity) and HBM bandwidth, vendor data sheets (SXM parts).
# H200 has the H100 SXM's compute and 4.8 TB/s of HBM3e.
GPUS = {
    "h100": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12, "bandwidth": 3.35e12},
    "h200": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12, "bandwidth": 4.8e12},
}


class _BytesCounter(TorchDispatchMode):
    """Sums the bytes of every tensor output of every aten op (views excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        if func.is_view:
            return out
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.bytes += t.numel() * t.element_size()
        return out


def _batch(denoiser, batch: int, shape, generator: torch.Generator):
    u = torch.randn(batch, *shape, generator=generator)
    c = torch.randn(batch, *shape, generator=generator)
    t = torch.rand(batch, generator=generator)
    z = torch.randn(batch, *shape, generator=generator)
    return u, c, t, z


def _step(denoiser, optimizer, u, c, t, z) -> None:
    loss = denoising_loss(denoiser, u, t, z, cond=c).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
    optimizer.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3, help="timed steps per batch size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trajectories", type=int, default=64)
    p.add_argument("--snapshots", type=int, default=100)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    p.add_argument(
        "--precision",
        choices=["fp32", "tf32", "bf16"],
        default="fp32",
        help="peak used for the compute-bound estimate (default fp32: the "
        "training runs in float32; no AMP in train_emulator)",
    )
    p.add_argument("--compute-efficiency", type=float, nargs="+", default=[0.10, 0.20])
    p.add_argument("--bandwidth-efficiency", type=float, default=0.30)
    p.add_argument(
        "--gpu-batch-size",
        type=int,
        default=128,
        help="batch size of the GPU run (sets the number of optimisation steps)",
    )
    p.add_argument(
        "--op-overhead-us",
        type=float,
        default=10.0,
        help="assumed launch + Python dispatch cost per aten op on the GPU (eager)",
    )
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    n = args.resolution
    cfg = denoiser_config("unet", (n, n))
    torch.manual_seed(0)
    den = build_denoiser_from_config(cfg).train()
    params = sum(q.numel() for q in den.parameters())
    opt = torch.optim.AdamW(den.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    shape = (n, n)

    print(f"# Training cost of the default NS U-Net at {n}x{n}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), float32")
    print(
        f"denoiser_config: hidden_channels {cfg['hidden_channels']}, hidden_blocks "
        f"{cfg['hidden_blocks']}, emb_features {cfg['emb_features']}, norm {cfg['norm']}, "
        f"periodic {cfg['periodic']}"
    )
    print(f"parameters: {params:,} ({params * 4 / 2**20:.2f} MiB in float32)")

    # ---- FLOPs and bytes per sample (batch 8, divided by 8)
    b = 8
    u, c, t, z = _batch(den, b, shape, g)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        denoising_loss(den, u, t, z, cond=c)
    flops_fwd = fc.get_total_flops() / b
    with FlopCounterMode(display=False) as fc:
        denoising_loss(den, u, t, z, cond=c).mean().backward()
    flops_fb = fc.get_total_flops() / b
    den.zero_grad(set_to_none=True)
    counter = _BytesCounter()
    with counter:
        denoising_loss(den, u, t, z, cond=c).mean().backward()
    bytes_fb = counter.bytes / b
    ops_fb = counter.ops
    den.zero_grad(set_to_none=True)
    saved: dict[tuple, int] = {}

    def pack(x: torch.Tensor) -> torch.Tensor:
        key = (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape))
        saved[key] = x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = denoising_loss(den, u, t, z, cond=c).mean()
    saved_bytes = sum(saved.values()) / b
    del loss
    print(
        f"FLOPs per sample (FlopCounterMode: conv/matmul only): forward "
        f"{flops_fwd / 1e9:.3f} GFLOP, forward+backward {flops_fb / 1e9:.3f} GFLOP"
    )
    print(
        f"bytes written by aten ops per sample, forward+backward: {bytes_fb / 2**20:.1f} MiB "
        f"({ops_fb} aten ops per training step, whatever the batch)"
    )
    print(
        f"activations saved for backward per sample: {saved_bytes / 2**20:.1f} MiB "
        f"(batch 512: {512 * saved_bytes / 2**30:.1f} GiB)"
    )

    # ---- CPU wall time per training sample
    print("\n| batch | s / step | ms / sample | GFLOP/s (counted) |")
    print("|---|---|---|---|")
    cpu_rate = None
    for bs in args.batch_sizes:
        u, c, t, z = _batch(den, bs, shape, g)
        _step(den, opt, u, c, t, z)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _step(den, opt, u, c, t, z)
            times.append(time.perf_counter() - t0)
        s = min(times)
        cpu_rate = s / bs
        print(f"| {bs} | {s:.3f} | {1e3 * s / bs:.1f} | {flops_fb * bs / s / 1e9:.1f} |")
    print(
        "(min over the timed steps; the machine is shared, so other jobs can only make "
        "these slower)"
    )

    # ---- GPU estimate
    samples = args.trajectories * args.snapshots * args.epochs
    gpu = GPUS[args.gpu]
    peak = gpu[args.precision]
    bw = gpu["bandwidth"] * args.bandwidth_efficiency
    t_mem = samples * bytes_fb * 2 / bw  # every produced byte written once and read ~once
    steps = math.ceil(samples / args.gpu_batch_size)
    t_over = steps * ops_fb * args.op_overhead_us * 1e-6
    print("\n## GPU training time: ESTIMATE (no GPU measured)")
    print("Assumptions:")
    print(
        f"- samples processed: {args.trajectories} trajectories x {args.snapshots} snapshots "
        f"x {args.epochs} epochs = {samples:,} (an upper bound: the train split is ~80 % "
        "of the trajectories, with snapshots-1 pairs each)"
    )
    print(
        f"- GPU {args.gpu.upper()} SXM, {args.precision} dense peak {peak / 1e12:.0f} TFLOP/s, "
        f"HBM {gpu['bandwidth'] / 1e12:.2f} TB/s"
    )
    print(
        f"- compute-bound time: counted forward+backward FLOPs at "
        f"{', '.join(f'{100 * e:.0f} %' for e in args.compute_efficiency)} of that peak"
    )
    print(
        f"- memory-bound time: 2 x the bytes produced by aten ops (written once, read once) "
        f"at {100 * args.bandwidth_efficiency:.0f} % of the HBM bandwidth"
    )
    print(
        f"- per-step overhead: {ops_fb} aten ops x {args.op_overhead_us:g} us (kernel launch + "
        f"Python dispatch, eager mode, no CUDA graphs) x {steps:,} steps at batch "
        f"{args.gpu_batch_size} = {t_over / 60:.1f} min"
    )
    print(
        "- estimate = max(compute-bound, memory-bound) + per-step overhead; the optimiser "
        "step's own traffic, data loading and validation passes are ignored"
    )
    print(f"- memory-bound time: {t_mem / 60:.1f} min")
    for e in args.compute_efficiency:
        t_comp = samples * flops_fb / (peak * e)
        est = max(t_comp, t_mem) + t_over
        print(
            f"- at {100 * e:.0f} % of peak: compute-bound {t_comp / 60:.1f} min -> "
            f"ESTIMATE {est / 60:.1f} min ({est / 3600:.2f} h)"
        )
    need = samples * flops_fb / (peak * 3600)
    print(
        f"- the 1 h target is missed on compute only below {100 * need:.1f} % of the "
        f"{args.precision} peak, and on memory traffic only below "
        f"{100 * samples * bytes_fb * 2 / (gpu['bandwidth'] * 3600):.1f} % of the bandwidth"
    )
    print(
        f"- for comparison, this CPU at {torch.get_num_threads()} thread(s): "
        f"{samples * cpu_rate / 3600:.1f} h for the same samples "
        f"(at the last batch size's rate)"
    )


if __name__ == "__main__":
    main()
