"""The two forms of ``compile=True``'s guided call against the network passes they make
(docs/performance.md, issue #14): the shipped Lorenz-63 denoiser, one CPU thread, setup (a)'s
observation (x1 and x3), one diffusion time; for each N:

- *whole*: :func:`~genfilter.emulators.guidance.projected_mmps_mean` compiled as one graph
  (the D Jacobian rows as one batched backward pass);
- *split*: the compiled network with D separate vector–Jacobian products, then
  :func:`~genfilter.emulators.guidance.projected_update` compiled;
- *passes*: the network passes alone, compiled (one forward pass with graph and D
  vector–Jacobian products: the compute floor of one guided call).

The three alternate call by call (order reversed every round), so that the machine's slow
spells hit all three; the table gives the median milliseconds, the median over the rounds of
each round's ratios (which cancels the drift), and the largest difference between the two
forms' means.
:class:`~genfilter.emulators.guidance.CompiledProjectedMMPS` picks *whole* up to
``DiffusionEmulator.FUSED_MAX_ROWS`` particles and *split* above.

    python benchmarks/compiled_guidance.py                     # ~1-2 min (compilation included)
    python benchmarks/compiled_guidance.py --sizes 512 1024 --rounds 60

Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def measure(n: int, rounds: int) -> dict:
    from genfilter.emulators.guidance import CompiledProjectedMMPS
    from genfilter.experiments.l63 import load_shipped_emulator
    from genfilter.observations import Observation, Select, isotropic_noise, noise_matrix

    em = load_shipped_emulator(0.1, compile=True)
    g = torch.Generator().manual_seed(0)
    x_prev = 5.0 * torch.randn(n, 3, generator=g)
    obs = Observation(torch.tensor([1.0, 20.0]), Select([0, 2]), isotropic_noise(0.25))
    _, H = em._linear_observation(obs, x_prev, matrix=True)
    cond = em.condition(x_prev)
    t = torch.tensor(0.5)
    alpha, sigma = em.schedule(t)
    x_t = alpha * torch.randn(n, 3, generator=g) + sigma * torch.randn(n, 3, generator=g)
    with torch.no_grad():
        offset = obs.predict(em.from_target(torch.zeros_like(x_t), x_prev)).double()
    args = (
        em.denoiser,
        x_t,
        t,
        cond,
        obs.y.double(),
        H,
        noise_matrix(obs.noise, 2).double(),
        offset,
    )
    whole = CompiledProjectedMMPS(em.net, max_fused_rows=n)
    split = CompiledProjectedMMPS(em.net, max_fused_rows=0)
    eye = torch.eye(3)

    def passes() -> None:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_()
            out = em.net(x, t, cond=cond).mean
            for d in range(3):
                torch.autograd.grad(out, x, eye[d].expand_as(out), retain_graph=d < 2)

    a, b = whole(*args), split(*args)  # compile
    passes()
    times: dict[str, list[float]] = {"whole": [], "split": [], "passes": []}
    calls = {"whole": lambda: whole(*args), "split": lambda: split(*args), "passes": passes}
    for r in range(rounds):
        names = list(calls) if r % 2 == 0 else list(reversed(calls))
        for name in names:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        f"{x}/{y}": statistics.median(u / v for u, v in zip(times[x], times[y], strict=True))
        for x, y in (("whole", "passes"), ("split", "passes"), ("split", "whole"))
    }
    return {"n": n, **med, **ratios, "diff": float((a - b).abs().max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512, 1024])
    p.add_argument("--rounds", type=int, default=40, help="calls of each form (median)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        "| N | whole (ms) | split (ms) | passes (ms) | whole / passes | split / passes "
        "| split / whole | max abs. difference |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        m = measure(n, args.rounds)
        print(
            f"| {n} | {1e3 * m['whole']:.2f} | {1e3 * m['split']:.2f} | {1e3 * m['passes']:.2f} "
            f"| {m['whole/passes']:.2f} | {m['split/passes']:.2f} | {m['split/whole']:.2f} "
            f"| {m['diff']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
