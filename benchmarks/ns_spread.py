"""Where a Navier–Stokes emulator's one-step spread sits, against the true model's
(docs/results/ns.md, "A deeper U-Net").

`genfilter validate` reports the variance ratio as the mean over grid points of
var_emulator / var_true; this script splits it. From ``--states`` attractor states (the
states `genfilter validate --states S --rollout-members S` draws with the same seed), it
draws ``--samples`` one-step transitions from the emulator and two independent sets from the
true model (a and b), then prints:

* the mean over grid points of var_em / var_a and of var_b / var_a (the statistic's value
  for a perfect emulator), and the ratios of the sums over grid points (the total spread);
* the ratio of sums within each fifth of the grid points sorted by var_b (the true spread
  of the independent set b, so that the binning does not select on set a's noise);
* the spread per wavenumber shell |k| (sum of the Fourier coefficients' variances), which
  shows whether the emulator puts spread where the true model has none (the mean mode and
  the modes the de-aliasing keeps at zero);
* the energy distance of ``genfilter validate`` (draws in units of set a's standard deviation
  per grid point) split into what the mean and the spread contribute: the emulator's draws
  against set a, set b against set a (the floor), the emulator's deviations around set b's
  mean (the emulator's spread, the true mean), set b's deviations around the emulator's mean
  (the true spread, the emulator's mean), and the emulator's draws rescaled per grid point to
  set b's standard deviation (the emulator's mean and correlations, the true spread per
  point).

    .venv/bin/python benchmarks/ns_spread.py benchmarks/artifacts/ns2d-32-deep-fp16.pt
"""

from __future__ import annotations

import argparse
import time

import torch

from genfilter.emulators.training import checkpoint_system, load_emulator
from genfilter.emulators.validation import energy_distance
from genfilter.systems.datasets import make_system


def load_ns2d(checkpoint: str, steps: int):
    """``(system, emulator)`` of an ns2d checkpoint: the true model with the constants the
    checkpoint records, and the emulator with ``steps`` sampler steps (also used by
    ``ns_rollout.py``)."""
    name, kwargs = checkpoint_system(checkpoint)
    if name != "ns2d":
        raise SystemExit(f"{checkpoint} emulates {name!r}, not ns2d")
    return make_system(name, **kwargs), load_emulator(checkpoint, steps=steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--states", type=int, default=4)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=64, help="sampler steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    system, em = load_ns2d(args.checkpoint, args.steps)
    g = torch.Generator().manual_seed(args.seed)
    x0 = system.attractor_states(args.states, generator=g)
    n = system.resolution
    k = torch.fft.fftfreq(n, 1 / n)
    shell = (k[:, None] ** 2 + k[None, : n // 2 + 1] ** 2).sqrt().round().long().flatten()
    shells = int(shell.max()) + 1
    var = {"em": [], "a": [], "b": []}
    spectra = {key: torch.zeros(shells, dtype=torch.float64) for key in var}
    energy = []
    for x in x0:
        xb = x.expand(args.samples, *x.shape).clone()
        a = system.step(xb, 1, g)
        b = system.step(xb, 1, g)
        e = em.sample(xb, generator=g).to(a.dtype)
        for key, draws in (("em", e), ("a", a), ("b", b)):
            var[key].append(draws.var(0).flatten().double())
            f = torch.fft.rfft2(draws.double())
            v = (f - f.mean(0)).abs().pow(2).mean(0).flatten()
            spectra[key] += torch.zeros(shells, dtype=torch.float64).index_add_(0, shell, v)
        sd = a.flatten(1).std(0)
        ea, eb, ee = (draws.flatten(1) / sd for draws in (a, b, e))
        energy.append(
            [
                energy_distance(ee, ea),
                energy_distance(eb, ea),
                energy_distance(ee - ee.mean(0) + eb.mean(0), ea),
                energy_distance(eb - eb.mean(0) + ee.mean(0), ea),
                energy_distance((ee - ee.mean(0)) / ee.std(0) * eb.std(0) + ee.mean(0), ea),
            ]
        )
    ve, va, vb = (torch.cat(var[key]) for key in ("em", "a", "b"))
    print(f"{args.checkpoint}: {args.states} states x {args.samples} samples, seed {args.seed}")
    print("| statistic | emulator / true a | true b / true a |")
    print("|---|---|---|")
    print(
        f"| mean over grid points of the variance ratio | {float((ve / va).mean()):.3f} | "
        f"{float((vb / va).mean()):.3f} |"
    )
    print(
        f"| ratio of the summed variances | {float(ve.sum() / va.sum()):.3f} | "
        f"{float(vb.sum() / va.sum()):.3f} |"
    )
    q = torch.quantile(vb, torch.linspace(0, 1, 6, dtype=vb.dtype))
    order = vb.argsort()
    print(
        "\n| fifth of the grid points by true spread (var b) | var b range | "
        "emulator / true a | true b / true a |"
    )
    print("|---|---|---|---|")
    for i, idx in enumerate(order.chunk(5)):
        print(
            f"| {i + 1} | {q[i]:.3f}–{q[i + 1]:.3f} | {float(ve[idx].sum() / va[idx].sum()):.3f} "
            f"| {float(vb[idx].sum() / va[idx].sum()):.3f} |"
        )
    total = spectra["a"].sum()
    print("\n| shell abs(k) | true a: share of the spread | emulator / true a | true b / true a |")
    print("|---|---|---|---|")
    for s in range(shells):
        ta, te, tb = (float(spectra[key][s]) for key in ("a", "em", "b"))
        if ta == 0 and te == 0:
            continue
        ratio = (
            f"{te / ta:.3f}"
            if ta > 1e-9 * float(total)
            else f"true ≈ 0, emulator {te / float(total):.1e} of the true total"
        )
        rb = f"{tb / ta:.3f}" if ta > 1e-9 * float(total) else "≈ 0"
        print(f"| {s} | {ta / float(total):.2e} | {ratio} | {rb} |")
    labels = (
        "emulator vs true a (validate's)",
        "true b vs true a (the floor)",
        "emulator's spread around true b's mean",
        "true b's spread around the emulator's mean",
        "emulator rescaled to true b's sd per grid point",
    )
    per_state = torch.tensor(energy, dtype=torch.float64)
    print("\n| energy distance (units of true a's sd per grid point) | per state | mean |")
    print("|---|---|---|")
    for label, column in zip(labels, per_state.T, strict=True):
        states = ", ".join(f"{float(v):.3f}" for v in column)
        print(f"| {label} | {states} | {float(column.mean()):.3f} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
