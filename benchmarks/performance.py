"""The performance page (docs/performance.md, issue #14) in one run: FA-APF on Lorenz-63
setup (a) with the shipped emulator, one CPU thread, every ratio measured in this process.

Tables printed (markdown):

1. *Step against floor* at N = 64 and 1024: seconds per filter step (median over steps 2..S),
   network passes per step counted on the network (forward without graph, forward with
   graph, backward vector–Jacobian products; rows through the output layer divided by N),
   the paper's count K(1 + 2n) + 1, the compute floor (each kind of pass × the median time
   of one batched pass of that kind at N, measured right after each timed step), step /
   floor (the median over the steps of each step's time over the floor measured after it),
   and the share of the step spent inside the network calls themselves (hooks; the rest is
   glue); for FA-APF with
   the default projected covariance, FA-APF with the paper's raw MMPS (GMRES, 1
   iteration), the bootstrap PF and the EnKF (FA-APF / EnKF and FA-APF / BPF follow); with
   ``--compile`` also FA-APF with ``compile=True`` (its floor from the compiled network's
   passes, its pass counts the eager default's).
2. *Time against N*, N = 16 … 1024: seconds per step, a least-squares line (slope per
   particle, intercept, R²) and the fixed share of a step (intercept / time) at each N.
3. *Chunking* at N = 256 and 1024, chunk sizes 64 and 256: time over the unchunked step,
   the same ratio for the network's forward pass alone (N/c calls of c rows against one
   call of N rows: what chunking costs whatever the glue), and the peak resident memory
   of a step above the process's resident memory before it (one fresh process per cell).
4. *Alternatives* at N = 64 and 1024: the D Jacobian rows of the projected covariance as
   one vectorised backward call (``is_grads_batched``) against D calls; and, with
   ``--compile``, the step with ``compile=True`` (compilation excluded) over the eager step,
   and (for D = 3) ``compile=True`` with the projection by ``eigh`` between two graphs over
   ``compile=True`` with its closed-form projection inside the graph.

Ratios of two configurations (tables 3 and 4) alternate the two step by step (a, b, b, a,
...) and report the median of the per-round ratios: on a shared machine, slow spells of
several seconds otherwise move single timings by ±40 %.

    python benchmarks/performance.py                  # about 10 minutes on one core
    python benchmarks/performance.py --compile        # + compile=True in tables 1 and 4
    python benchmarks/performance.py --setup l96-sparse --only 1 --floor-sizes 40 --steps 5

Run it on an otherwise idle machine: another process on the same core measures contention.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

SETUP = "l63-a"
"""The named setup every table runs (``--setup``)."""


def make(
    method: str,
    n: int,
    emulator_options: dict | None = None,
    options: dict | None = None,
    horizon: int = 20,
):
    """Filter, ensemble after its first step, twin (``horizon`` observations, at least 20)
    and emulator of setup (a)."""
    from genfilter.experiments.config import parse_config
    from genfilter.experiments.runner import build_emulator, build_filter, build_twin_setup
    from genfilter.experiments.twin import make_twin

    cfg = parse_config(
        {
            "name": "perf",
            "setup": SETUP,
            "emulator": "shipped",
            "emulator_options": dict(emulator_options or {}),
            "filter": {"method": method, "particles": n, "options": dict(options or {})},
            "steps": max(20, horizon),
            "burn_in": 0,
            "runs": 1,
            "seed": 0,
        }
    )
    setup = build_twin_setup(cfg)
    em = build_emulator(cfg, setup)
    f = build_filter(cfg, em, setup, torch.Generator().manual_seed(0))
    twin = make_twin(setup, 0)
    ens = f.init(twin.initial_ensemble(n))
    ens, _ = f.step(ens, twin.observations[0])  # the first step: all particles equal
    return f, ens, twin, em


def step_seconds(f, ens, twin, steps: int) -> float:
    """Median seconds of ``steps`` consecutive filter steps (observations 1..steps)."""
    times = []
    for k in range(1, steps + 1):
        t0 = time.perf_counter()
        ens, _ = f.step(ens, twin.observations[k])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Stepper:
    """A filter that advances its own ensemble through the twin, one timed step a call."""

    def __init__(self, f, ens, twin) -> None:
        self.f, self.ens, self.twin, self.k = f, ens, twin, 1

    def __call__(self) -> float:
        obs = self.twin.observations[self.k % len(self.twin.observations)]
        t0 = time.perf_counter()
        self.ens, _ = self.f.step(self.ens, obs)
        self.k += 1
        return time.perf_counter() - t0


def paired(a, b, rounds: int) -> tuple[float, float, float]:
    """Median seconds of ``a`` and ``b`` and the median of the per-round ratios b / a, the
    two calls alternating (a, b, b, a, ...) so that a slow spell of the machine hits both."""
    ta, tb, ratios = [], [], []
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        x = first()
        y = second()
        sa, sb = (x, y) if r % 2 == 0 else (y, x)
        ta.append(sa)
        tb.append(sb)
        ratios.append(sb / sa)
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


class NetworkClock:
    """Seconds spent inside the denoiser's forward calls and inside
    ``torch.autograd.grad`` (vector–Jacobian products; with an observation operator that
    is not linear, its own small backward passes are included) while active."""

    def __init__(self, em) -> None:
        self.module, self.seconds, self._start = em.denoiser, 0.0, 0.0

    def __enter__(self) -> NetworkClock:
        def pre(module, args):
            self._start = time.perf_counter()

        def post(module, args, out):
            self.seconds += time.perf_counter() - self._start

        self._hooks = [
            self.module.register_forward_pre_hook(pre),
            self.module.register_forward_hook(post),
        ]
        self._grad = torch.autograd.grad

        def grad(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self._grad(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        torch.autograd.grad = grad
        return self

    def __exit__(self, *exc) -> None:
        torch.autograd.grad = self._grad
        for h in self._hooks:
            h.remove()


class PassCounter(TorchDispatchMode):
    """Counts rows through the network's output layer (a matrix product with its weight):
    forward rows without autograd graph, forward rows with graph, and backward rows (the
    input gradient of a vector–Jacobian product)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.ptr = weight.untyped_storage().data_ptr()
        self.rows = {"fwd": 0, "fwd_graph": 0, "bwd": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (aten.addmm.default, aten.mm.default, aten.bmm.default, aten.matmul.default):
            mats = [a for a in args if isinstance(a, torch.Tensor) and a.ndim >= 2]
            hit = any(m.untyped_storage().data_ptr() == self.ptr for m in mats)
            if hit:
                data = mats[0]
                rows = data.numel() // data.shape[-1]
                if torch._C._current_autograd_node() is not None:
                    self.rows["bwd"] += rows
                elif torch.is_grad_enabled():
                    self.rows["fwd_graph"] += rows
                else:
                    self.rows["fwd"] += rows
        return func(*args, **kwargs)


def output_weight(em) -> torch.Tensor:
    return [m for m in em.modules() if isinstance(m, torch.nn.Linear)][-1].weight


def passes(f, ens, twin, em, n: int) -> dict[str, float]:
    counter = PassCounter(output_weight(em))
    with counter:
        f.step(ens, twin.observations[1])
    return {k: v / n for k, v in counter.rows.items()}


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pass_times(em, n: int, reps: int = 60, device: torch.device | None = None) -> dict[str, float]:
    """Median seconds of one batched pass of each kind on ``n`` rows (at t = 0.5), on
    ``device`` (default the CPU; the device is synchronised around each pass), of the
    denoiser that sampling calls (``em.net``: the ``torch.compile``d one with
    ``compile=True``)."""
    device = device or torch.device("cpu")
    d = em.net
    shape = (n, *em.state_shape)
    x, c = torch.randn(shape, device=device), torch.randn(shape, device=device)
    t = torch.full((), 0.5, device=device)

    def med(fn):
        fn()
        sync(device)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            sync(device)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    xi = x.clone().requires_grad_()
    with torch.no_grad():
        fwd = med(lambda: d(x, t, cond=c))
    with torch.enable_grad():
        graph = med(lambda: d(xi, t, cond=c).mean)
        out = d(xi, t, cond=c).mean
        v = torch.randn_like(out)
        bwd = med(lambda: torch.autograd.grad(out, xi, v, retain_graph=True))
    return {"fwd": fwd, "fwd_graph": graph, "bwd": bwd}


def paper_count(steps: int, iterations: int) -> int:
    """K(1 + 2n) + 1: K guided denoiser calls with n solver iterations, one weight call."""
    return steps * (1 + 2 * iterations) + 1


def table_floor(n: int, steps: int, compile_: bool = False) -> tuple[list[str], dict]:
    rows = [
        ("FA-APF, projected covariance (default)", "fa-apf", {}),
        ("FA-APF, raw MMPS, GMRES 1 (paper)", "fa-apf", {"covariance": "tweedie"}),
        ("bootstrap PF", "bpf", {}),
        ("EnKF", "enkf", {}),
    ]
    if compile_:
        rows.insert(1, ("FA-APF, projected, `compile=True`", "fa-apf", {"compile": True}))
    lines = [
        f"| N = {n} | s / step | passes: fwd + fwd (graph) + bwd | paper's count | "
        "floor (s) | step / floor | time inside network calls |",
        "|---|---|---|---|---|---|---|",
    ]
    seconds: dict[str, float] = {}
    counts: dict[str, dict[str, float]] = {}
    for label, method, opts in rows:
        compiled = bool(opts.get("compile"))
        f, ens, twin, em = make(method, n, opts, horizon=steps + 1)
        if compiled:
            # the compiled graphs hide their passes from the counter; the algorithm (and
            # so the count) is the eager default's
            f.step(ens, twin.observations[1])  # compiles the guided call
            p = counts["fa-apf"]
        else:
            p = passes(f, ens, twin, em, n)
            counts.setdefault(method, p)
        # step and pass times alternate, so that both see the same machine state; the
        # medians over the rounds are compared
        step_times, floors, shares = [], [], []
        for k in range(1, steps + 1):
            # no hooks in compiled graphs (they would break them)
            with nullcontext() if compiled else NetworkClock(em) as clock:
                t0 = time.perf_counter()
                ens, _ = f.step(ens, twin.observations[k])
                step_times.append(time.perf_counter() - t0)
            if not compiled:
                shares.append(clock.seconds / step_times[-1])
            pt = pass_times(em, n, reps=15)
            floors.append(sum(p[key] * pt[key] for key in p))
        s, floor = statistics.median(step_times), statistics.median(floors)
        # each step against the floor measured right after it (the drift of the machine
        # cancels in the ratio, as in tables 3 and 4), the median of those ratios
        ratio = statistics.median(a / b for a, b in zip(step_times, floors, strict=True))
        share = "—" if compiled else f"{statistics.median(shares):.0%}"
        seconds[method if not opts else label] = s
        count = f"{p['fwd']:.0f} + {p['fwd_graph']:.0f} + {p['bwd']:.0f}"
        paper = paper_count(em.steps, 1) if method == "fa-apf" else "—"
        lines.append(
            f"| {label} | {s:.4f} | {count} | {paper} | {floor:.4f} | {ratio:.2f} | {share} |"
        )
    lines.append("")
    lines.append(
        f"FA-APF / EnKF = {seconds['fa-apf'] / seconds['enkf']:.2f}, "
        f"FA-APF / BPF = {seconds['fa-apf'] / seconds['bpf']:.2f} (step times at N = {n})."
    )
    return lines, seconds


def floor_tables(sizes: list[int], steps: int, compile_: bool = False) -> list[str]:
    lines: list[str] = []
    for n in sizes:
        lines += ([""] if lines else []) + table_floor(n, steps, compile_)[0]
    return lines


def table_sizes(sizes: list[int], steps: int) -> list[str]:
    times = []
    for n in sizes:
        f, ens, twin, _ = make("fa-apf", n)
        times.append(step_seconds(f, ens, twin, steps))
    x = torch.tensor(sizes, dtype=torch.float64)
    y = torch.tensor(times, dtype=torch.float64)
    A = torch.stack([x, torch.ones_like(x)], dim=1)
    slope, intercept = torch.linalg.lstsq(A, y.unsqueeze(-1)).solution.flatten().tolist()
    resid = y - (slope * x + intercept)
    r2 = 1 - float((resid**2).sum() / ((y - y.mean()) ** 2).sum())
    lines = ["| N | s / step | fixed share (intercept / time) |", "|---|---|---|"]
    for n, t in zip(sizes, times, strict=True):
        lines.append(f"| {n} | {t:.4f} | {intercept / t:.0%} |")
    lines.append("")
    lines.append(
        f"Least squares over N = {sizes[0]}..{sizes[-1]}: {slope * 1e3:.3f} ms per particle, "
        f"intercept {intercept:.4f} s, R² = {r2:.4f}."
    )
    return lines


def memory_child(n: int, chunk: int | None) -> None:
    """One fresh process: peak resident memory of two steps above the resident memory
    after the set-up (kB from /proc/self/status), printed as JSON."""

    def status(key: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
        raise KeyError(key)

    torch.set_num_threads(1)
    opts = {} if chunk is None else {"chunk_size": chunk}
    f, ens, twin, _ = make("fa-apf", n, opts)
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak to the current RSS
        fh.write("5")
    base = status("VmRSS:")
    for k in (1, 2):
        ens, _ = f.step(ens, twin.observations[k])
    print(json.dumps({"peak_kib": status("VmHWM:") - base}))


def peak_memory(n: int, chunk: int | None) -> float:
    cmd = [sys.executable, __file__, "--setup", SETUP, "--memory-child", str(n), str(chunk or 0)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_kib"] / 1024


def table_chunks(sizes: list[int], chunks: list[int], steps: int) -> list[str]:
    lines = [
        "| N | chunk | s / step | chunked / unchunked | network forward alone, chunked / "
        "unchunked | peak memory above baseline (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        plain = Stepper(*make("fa-apf", n)[:3])
        lines.append(f"| {n} | — | — | 1 | 1 | {peak_memory(n, None):.1f} |")
        for c in chunks:
            f, ens, twin, em = make("fa-apf", n, {"chunk_size": c})
            _, sec, ratio = paired(plain, Stepper(f, ens, twin), steps)
            net = paired(forward_calls(em, n, 1), forward_calls(em, c, n // c), 40)[2]
            lines.append(
                f"| {n} | {c} | {sec:.4f} | {ratio:.2f} | {net:.2f} | {peak_memory(n, c):.1f} |"
            )
    return lines


def forward_calls(em, rows: int, calls: int):
    """A timer of ``calls`` forward passes (no graph) of the denoiser on ``rows`` rows."""
    d = em.denoiser
    D = math.prod(em.state_shape)
    x, c, t = torch.randn(rows, D), torch.randn(rows, D), torch.tensor(0.5)

    @torch.no_grad()
    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            d(x, t, cond=c)
        return time.perf_counter() - t0

    return run


def timer(fn):
    """``fn`` as a callable that returns its own duration."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


def table_alternatives(sizes: list[int], steps: int, compile_: bool) -> list[str]:
    from genfilter.emulators.guidance import _rows

    lines = ["| N | alternative | time over the default |", "|---|---|---|"]
    for n in sizes:
        f, ens, twin, em = make("fa-apf", n)
        d = em.denoiser
        D = math.prod(em.state_shape)
        x, c, t = torch.randn(n, D), torch.randn(n, D), torch.tensor(0.5)
        with torch.enable_grad():
            xi = x.clone().requires_grad_()
            out = d(xi, t, cond=c).mean
        basis = torch.eye(D)[:, None, :].expand(D, n, D).contiguous()
        batched = partial(
            torch.autograd.grad, out, xi, basis, retain_graph=True, is_grads_batched=True
        )
        ratio = paired(timer(partial(_rows, out, xi)), timer(batched), 60)[2]
        lines.append(f"| {n} | Jacobian rows in one vectorised backward call | {ratio:.2f} |")
        if compile_:
            fc, ensc, twinc, _ = make("fa-apf", n, {"compile": True})
            fc.step(ensc, twinc.observations[1])  # compiles
            ratio = paired(Stepper(f, ens, twin), Stepper(fc, ensc, twinc), steps)[2]
            lines.append(f"| {n} | `compile=True` (whole step) | {ratio:.2f} |")
            if D == 3:
                ratio = closed_form_against_eigh(n, steps)
                lines.append(
                    f"| {n} | `compile=True` with the projection by `eigh` between two "
                    f"graphs (as for D ≠ 3), over `compile=True` | {ratio:.2f} |"
                )
    return lines


def closed_form_against_eigh(n: int, steps: int) -> float:
    """Step time of ``compile=True`` with the D > 3 projection (``eigh`` of the rows that fail
    the Cholesky test, eagerly between two graphs) over ``compile=True`` with the
    closed-form 3 x 3 projection inside the graph (the default for D = 3), paired."""
    from genfilter.emulators import guidance

    closed = guidance.psd_projection_3x3

    class Using:
        """A stepper run with ``psd_projection_3x3`` set to ``fn`` (the compiled guided call
        looks it up as a global, so each version gets its own cached graph)."""

        def __init__(self, fn) -> None:
            f, ens, twin, _ = make("fa-apf", n, {"compile": True})
            self.fn, self.stepper = fn, Stepper(f, ens, twin)
            self()  # compiles this version

        def __call__(self) -> float:
            guidance.psd_projection_3x3 = self.fn
            try:
                return self.stepper()
            finally:
                guidance.psd_projection_3x3 = closed

    return paired(Using(closed), Using(guidance._clip_between_graphs), steps)[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per cell (median)")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    p.add_argument("--compile", action="store_true", help="also time compile=True")
    p.add_argument(
        "--only", type=int, nargs="+", choices=[1, 2, 3, 4], help="print only these tables"
    )
    p.add_argument("--floor-sizes", type=int, nargs="+", default=[64, 1024], help="N of table 1")
    p.add_argument("--setup", default="l63-a", help="named setup (l63-a, l96-sparse, ...)")
    p.add_argument("--memory-child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    global SETUP
    SETUP = args.setup
    torch.set_num_threads(1)
    if args.memory_child:
        n, chunk = args.memory_child
        memory_child(n, chunk or None)
        return
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, 1 thread; setup {SETUP}, shipped emulator"
    )
    sections = [
        (
            "Step against floor",
            lambda: floor_tables(args.floor_sizes, args.steps, args.compile),
        ),
        ("Time against N (FA-APF)", lambda: table_sizes(args.sizes, args.steps)),
        ("Chunking (FA-APF)", lambda: table_chunks([256, 1024], [64, 256], args.steps)),
        ("Alternatives", lambda: table_alternatives([64, 1024], args.steps, args.compile)),
    ]
    for i, (title, fn) in enumerate(sections, start=1):
        if args.only and i not in args.only:
            continue
        print(f"\n### {title}\n", flush=True)
        print("\n".join(fn()), flush=True)


if __name__ == "__main__":
    main()
