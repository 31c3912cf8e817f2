"""Free rollout of a Navier–Stokes emulator against the true model: RMS vorticity over time
and the kinetic-energy spectrum per wavenumber shell (docs/results/ns.md, "A deeper U-Net";
the true model's stationary values are in docs/systems.md, "Stationary statistics").

From ``--members`` attractor states (seed ``--seed``), both models run ``--length``
snapshots (0.5 time units each) without observations. Printed: the RMS vorticity of each
(mean over members) every ``--every`` snapshots, and the energy spectrum E(k)
(``navier_stokes.energy_spectrum``) averaged over members and over the second half of the
rollout, with the emulator / true ratio per shell.

    .venv/bin/python benchmarks/ns_rollout.py benchmarks/artifacts/ns2d-32-deep-fp16.pt
"""

from __future__ import annotations

import argparse
import time

import torch
from ns_spread import load_ns2d  # a sibling script: benchmarks/ is on sys.path when run

from genfilter.systems.navier_stokes import energy_spectrum, rms_vorticity


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--length", type=int, default=40, help="snapshots")
    p.add_argument("--every", type=int, default=10, help="print the RMS every this many")
    p.add_argument("--steps", type=int, default=64, help="sampler steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.length < 2:
        raise SystemExit(f"--length must be at least 2, got {args.length}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    system, em = load_ns2d(args.checkpoint, args.steps)
    g = torch.Generator().manual_seed(args.seed)
    x_t = system.attractor_states(args.members, generator=g)
    x_e = x_t.clone()
    rms = [(0, float(rms_vorticity(x_t).mean()), float(rms_vorticity(x_e).mean()))]
    spec_t, spec_e = [], []
    for i in range(1, args.length + 1):
        x_t = system.step(x_t, 1, g)
        x_e = em.sample(x_e, generator=g).to(x_t.dtype)
        if not torch.isfinite(x_e).all():
            raise SystemExit(f"the emulator's rollout is not finite after {i} snapshots")
        if i % args.every == 0 or i == args.length:
            rms.append((i, float(rms_vorticity(x_t).mean()), float(rms_vorticity(x_e).mean())))
        if i > args.length // 2:
            spec_t.append(energy_spectrum(x_t)[1].mean(0))
            spec_e.append(energy_spectrum(x_e)[1].mean(0))
    print(
        f"{args.checkpoint}: {args.members} members x {args.length} snapshots "
        f"({args.length * system.interval:g} time units), seed {args.seed}"
    )
    print("| snapshot | RMS vorticity, true | emulator |")
    print("|---|---|---|")
    for i, rt, re in rms:
        print(f"| {i} | {rt:.3f} | {re:.3f} |")
    et, ee = torch.stack(spec_t).mean(0), torch.stack(spec_e).mean(0)
    print(f"\nEnergy spectrum, snapshots {args.length // 2 + 1}–{args.length}:")
    print("| k | E(k) x 10³, true | emulator | emulator / true |")
    print("|---|---|---|---|")
    for k in range(1, et.shape[0]):
        if et[k] > 1e-6 * et.sum():
            print(f"| {k} | {1e3 * et[k]:.3g} | {1e3 * ee[k]:.3g} | {ee[k] / et[k]:.2f} |")
    print(
        f"| total (½ mean abs(v)²) x 10³ | {1e3 * et.sum():.3g} | {1e3 * ee.sum():.3g} | "
        f"{ee.sum() / et.sum():.2f} |"
    )
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
