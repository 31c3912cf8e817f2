"""How far each estimate of the predictive mean E[x^{k+1} | x^k] of the shipped diffusion
emulators (Lorenz-63, or Lorenz-96 with ``--system lorenz96``), or of a Navier–Stokes
checkpoint (``--system ns2d --emulator CKPT``), is from the mean of the emulator's own draws
(docs/method.md#tweedie-mean).

For clouds of particles around attractor states (sd 0.3 around each of ``--states``
states, ``--particles`` per state), the reference is the mean of ``--draws`` unguided
emulator draws per particle; each estimate's error is in units of the draws' standard
deviation, averaged over particles and components. Rows: the paper's one denoiser call at
t = 1 from x_1 = sigma_1 z, the same with z = 0 (the fixed point's start), and the fixed
point ``DiffusionEmulator(mean_sigma=s, mean_iterations=2)`` for each ``s`` of ``--sigmas``.

    .venv/bin/python benchmarks/predictive_mean.py          # about 2 minutes on one core
    .venv/bin/python benchmarks/predictive_mean.py --system lorenz96 --intervals 0.05 \
        --sigmas 1 0.3 0.2 0.1 0.05 0.03 --states 4 --particles 8 --draws 256   # 30 s
    .venv/bin/python benchmarks/predictive_mean.py --system ns2d --resolution 32 \
        --emulator benchmarks/artifacts/ns2d-32-cpu-fp16.pt --intervals 0.5 \
        --sigmas 1 0.5 0.3 0.2 0.1 0.03 --states 4 --particles 2 --draws 128   # minutes (not timed)
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from genfilter.emulators.training import load_emulator
from genfilter.experiments.l63 import load_shipped_emulator
from genfilter.systems.lorenz63 import StochasticLorenz63
from genfilter.systems.lorenz96 import Lorenz96
from genfilter.systems.navier_stokes import NavierStokes2D


def errors(interval: float, args) -> dict[str, float]:
    g = torch.Generator().manual_seed(args.seed)
    if args.system == "ns2d":
        system = NavierStokes2D(resolution=args.resolution, interval=interval)
        load = partial(load_emulator, args.emulator, steps=args.steps)
    else:
        system = StochasticLorenz63() if args.system == "lorenz63" else Lorenz96(interval=interval)
        load = partial(load_shipped_emulator, interval, system=args.system)
    states = system.attractor_states(args.states, generator=torch.Generator().manual_seed(123))
    shape = tuple(states.shape[1:])
    noise = torch.randn(args.states, args.particles, *shape, generator=g)
    cloud = (states.float()[:, None] + 0.3 * noise).reshape(-1, *shape)
    n, K = cloud.shape[0], args.draws
    paper = load()
    draws = paper.sample(cloud.repeat_interleave(K, 0), generator=g).reshape(n, K, -1).double()
    ref, sd = draws.mean(1), draws.std(1)

    def err(mu):
        return float(((mu.double().reshape(n, -1) - ref).abs() / sd).mean())

    out = {"paper (t = 1, one z)": err(paper.predict_mean(cloud, generator=g))}
    start = load(mean_sigma=1.0, mean_iterations=0)
    out["z = 0 (no iteration)"] = err(start.predict_mean(cloud))
    for s in args.sigmas:
        em = load(mean_sigma=s, mean_iterations=2)
        out[f"fixed point, s = {s:g}"] = err(em.predict_mean(cloud))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", choices=["lorenz63", "lorenz96", "ns2d"], default="lorenz63")
    p.add_argument("--emulator", default=None, help="ns2d: the emulator's checkpoint")
    p.add_argument("--resolution", type=int, default=32, help="ns2d: grid of the emulator")
    p.add_argument("--steps", type=int, default=32, help="ns2d: diffusion steps of the draws")
    p.add_argument("--intervals", type=float, nargs="+", default=[0.1, 0.5])
    p.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.2, 0.1])
    p.add_argument("--states", type=int, default=8)
    p.add_argument("--particles", type=int, default=16)
    p.add_argument("--draws", type=int, default=512)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    if args.system == "ns2d" and args.emulator is None:
        p.error("--system ns2d needs --emulator CKPT")
    torch.set_num_threads(1)
    table = {i: errors(i, args) for i in args.intervals}
    rows = list(next(iter(table.values())))
    print(
        f"Mean error / transition sd ({args.draws} draws per particle: reference error "
        f"{args.draws**-0.5:.2f})\n"
    )
    print("| estimate | " + " | ".join(f"interval {i:g}" for i in table) + " |")
    print("|---|" + "---|" * len(table))
    for r in rows:
        print(f"| {r} | " + " | ".join(f"{table[i][r]:.3f}" for i in table) + " |")


if __name__ == "__main__":
    main()
