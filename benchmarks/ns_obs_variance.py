"""The transition's variance at the observed values of the Navier–Stokes Table 2
(docs/results/ns.md, "Weights with the transition's spread"), three ways, from true states
of a twin: the Tweedie covariance at t = 1 that FA-APF's ``"gaussian"`` weights read
(``predict_obs_moments``: the diagonal of H V Hᵀ, and the extreme eigenvalues of its
symmetric part), and the variance of ``--draws`` forecasts of the emulator from the same
state at the observed values (what the ``"pooled"`` weights estimate with one forecast per
particle). No filter runs.

    python benchmarks/ns_obs_variance.py
"""

from __future__ import annotations

import argparse

import ns_gpu
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--emulator", default="benchmarks/artifacts/ns2d-32-deep-fp16.pt")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="twin seed")
    p.add_argument("--cycles", type=int, nargs="+", default=[1, 4], help="true states (cycles)")
    p.add_argument("--draws", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(1)
    from genfilter.experiments.runner import build_emulator, build_twin_setup
    from genfilter.experiments.twin import make_twin

    ns_gpu.OPTIONS.update(
        emulator=args.emulator,
        resolution=args.resolution,
        guidance={"iterations": 8, "mean_sigma": 0.5},
    )
    g = torch.Generator().manual_seed(0)
    print(
        "| observation | cycle | M | Tweedie diag (median) | eigenvalues (min, max) "
        "| negative | draws' variance (median) |"
    )
    print("|---|---|---|---|---|---|---|")
    em = None  # the same network at every level: loaded once
    for kind, key in (("coarsen", "factor"), ("subsample", "stride")):
        for level in (4, 8, 16):
            op = {"operator": kind, key: level}
            cfg = ns_gpu.config(
                "fa-apf", 8, op, cycles=8, runs=1, diffusion_steps=32, seed=args.seed
            )
            setup = build_twin_setup(cfg)
            em = build_emulator(cfg, setup) if em is None else em
            twin = make_twin(setup, args.seed)
            for k in args.cycles:
                x = twin.truth[k : k + 1]
                obs = twin.observations[k + 1].observed()
                _, _, hvh = em.predict_obs_moments(x, obs, generator=g)
                sym = (0.5 * (hvh + hvh.transpose(1, 2)))[0].double()
                ev = torch.linalg.eigvalsh(sym)
                draws = em.sample(x.repeat(args.draws, *[1] * (x.dim() - 1)), generator=g)
                var = obs.predict(draws).double().var(0)
                print(
                    f"| {kind} {level} | {k} | {sym.shape[0]} | {sym.diagonal().median():.3f} "
                    f"| {ev.min():.3f}, {ev.max():.3f} | {(ev < 0).double().mean():.0%} "
                    f"| {var.median():.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
