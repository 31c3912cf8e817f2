r"""Particles sharded across ``torch.distributed`` ranks (gloo on CPU, NCCL on GPUs).

``torchrun --nproc-per-node P genfilter filter cfg.yaml`` (or any script that calls
:func:`~genfilter.filters.base.assimilate` under ``torchrun``) splits the :math:`N`
particles of a particle filter (FA-APF, bootstrap PF) into :math:`P` contiguous blocks,
one per rank (:class:`ParticleShards`). Per step:

* every rank runs the emulator on its own block only (the expensive part: predictive
  means and the guided proposal of FA-APF, the forecast of the bootstrap PF);
* the :math:`N` log-likelihoods (and prior log-weights) are all-gathered, so the ESS
  bisection (:func:`~genfilter.filters.tempering.find_inflation`) and the resampling
  (:func:`~genfilter.filters.resampling.resample`) run on the whole vector, replicated on
  every rank — the same float operations as in one process;
* each rank sends, point to point, only the ancestors that another rank needs
  (:meth:`ParticleShards.take`); a particle whose ancestor lives on its own rank is copied
  locally. With systematic resampling the ancestors are sorted, so only the particles near
  block boundaries move.

**Bit-identity with one process.** With the same seed the run (particles, weights, ESS,
inflation, log-evidence, metrics) is bit-identical to the single-process run, whatever
:math:`P`, on CPU. Two things make this so:

1. *The random numbers.* Every rank keeps the filter's generator in step with the
   single-process run: inside an emulator call on a block of :math:`b` rows,
   :class:`_ShardedNoise` turns every draw from the filter's generator whose leading
   dimension is :math:`b` into the draw the single process makes for all :math:`B` rows
   (``torch.randn((B, ...))``) and hands back the block's rows. Draws of any other shape
   (scalars, the resampling uniforms) are made unchanged, identically on every rank.
   Emulators therefore must draw per-particle noise with the particle index first (the
   package's batch-first convention); a data-dependent draw (e.g. ``torch.multinomial`` on
   per-particle weights) cannot be sharded and raises.
2. *The arithmetic.* A network's output for one row must not depend on how many rows are
   in the batch. Measured on CPU (MKL 2024.2, AVX-512, float32 ``nn.Linear``), outputs
   and input gradients of the shipped Lorenz-63 denoiser are bitwise independent of the
   batch size for batches of 11 rows or more and differ in the last bit below that (another
   matrix-multiply kernel). :class:`ParticleShards` therefore refuses blocks smaller than
   :data:`MIN_PARTICLES_PER_PROCESS` = 16 particles. An emulator ``chunk_size`` whose last
   chunk has fewer than 11 rows breaks the same property (also in one process across
   chunk sizes).

On GPUs kernels may depend on the batch size, so results agree within floating-point
tolerance only. Several processes may share one GPU (more processes than GPUs on a node):
they then communicate through gloo (:func:`init_from_env`).

Everything a filter step reports is computed from gathered, replicated quantities, so
every rank returns the same :class:`~genfilter.filters.base.FilterRun`; only rank 0
writes files and shows progress bars (:func:`is_main`).

References:
    | On the Utility of Graphics Cards to Perform Massively Parallel Simulation of
    | Advanced Monte Carlo Methods (Lee, Yau, Giles, Doucet & Holmes, 2010),
    | Journal of Computational and Graphical Statistics 19, 769-789

    | Resampling Algorithms and Architectures for Distributed Particle Filters (Bolić,
    | Djurić & Hong, 2005), IEEE Transactions on Signal Processing 53, 2442-2450
"""

from __future__ import annotations

__all__ = [
    "MIN_PARTICLES_PER_PROCESS",
    "ParticleShards",
    "init_from_env",
    "is_distributed",
    "is_main",
    "rank",
    "world_size",
    "barrier",
]

import atexit
import os
import time
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.overrides import TorchFunctionMode

MIN_PARTICLES_PER_PROCESS = 16
"""Smallest block of particles per rank (see the module docstring, point 2)."""


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and shows progress (rank 0, or no process group)."""
    return rank() == 0


def barrier() -> None:
    """``dist.barrier()`` when distributed; nothing otherwise."""
    if is_distributed():
        dist.barrier()


def init_from_env(backend: str | None = None, device: str | torch.device | None = None) -> bool:
    """Starts the process group that ``torchrun`` describes in the environment
    (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...), if any and not started yet.

    Arguments:
        backend: ``"gloo"`` or ``"nccl"``. Default: NCCL when the particles live on CUDA
            (``device``; when ``device`` is not given, whenever CUDA is available) and every
            process of the node has a GPU of its own, else gloo. NCCL refuses two processes
            on one GPU, so several processes sharing a GPU talk through gloo: the tensors
            they exchange (N log-weights, the particles that change rank) go through the CPU.
        device: Where the particles will live (``"cpu"``, ``"cuda"``). On CUDA, process
            ``LOCAL_RANK`` uses GPU ``LOCAL_RANK mod torch.cuda.device_count()``.

    Returns:
        Whether more than one process runs.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return is_distributed()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        gpus = torch.cuda.device_count() if cuda else 0
        if backend is None:
            backend = "nccl" if cuda and gpus >= local_size else "gloo"
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
        if backend == "nccl" and gpus < local_size:
            raise ValueError(
                f"backend 'nccl' needs a GPU per process: {local_size} processes on this node, "
                f"{gpus} GPU(s); use backend 'gloo' to share GPUs"
            )
        if cuda:
            torch.cuda.set_device(local_rank % gpus)
        dist.init_process_group(backend)
        atexit.register(_shutdown)
    return is_distributed()


def _shutdown() -> None:
    """At exit: tear the process group down before the interpreter does, so no
    communication thread is left running while the process exits (gloo otherwise aborts a
    process now and then with "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------- noise
_SIZED = {torch.randn, torch.rand}
_LIKE = {torch.randn_like, torch.rand_like}
_INPLACE = {torch.Tensor.normal_, torch.Tensor.uniform_}
_UNSHARDABLE = {
    torch.multinomial,
    torch.bernoulli,
    torch.poisson,
    torch.normal,
    torch.randint_like,
    torch.Tensor.random_,
    torch.Tensor.exponential_,
    torch.Tensor.bernoulli_,
    torch.Tensor.geometric_,
    torch.Tensor.log_normal_,
    torch.Tensor.cauchy_,
}


def _size_arg(args: tuple, kwargs: dict) -> tuple[tuple[int, ...], Any]:
    """The requested size of ``torch.randn/rand(*size)`` and a function that rebuilds the
    call's arguments for another size."""
    if "size" in kwargs:
        size = tuple(kwargs["size"])
        return size, lambda new: ((), {**kwargs, "size": new})
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0]), lambda new: ((new,), kwargs)
    return tuple(args), lambda new: ((new,), kwargs)


def _randint_size(args: tuple, kwargs: dict) -> tuple[tuple[int, ...] | None, Any]:
    if "size" in kwargs:
        return tuple(kwargs["size"]), lambda new: (args, {**kwargs, "size": new})
    for i, a in enumerate(args):
        if isinstance(a, (tuple, list, torch.Size)):
            return tuple(a), lambda new, i=i: (args[:i] + (new,) + args[i + 1 :], kwargs)
    return None, None


class _ShardedNoise(TorchFunctionMode):
    """Inside an emulator call on ``b`` rows that are rows ``[offset, offset + b)`` of a
    batch of ``total`` rows: every draw from ``generator`` shaped ``(b, ...)`` is made as
    ``(total, ...)`` and its rows ``[offset, offset + b)`` are returned, so the generator
    advances exactly as in the one-process call on all ``total`` rows."""

    def __init__(self, generator: torch.Generator, rows: int, total: int, offset: int) -> None:
        super().__init__()
        self.generator = generator
        self.rows, self.total, self.offset = rows, total, offset

    def _mine(self, full: Tensor) -> Tensor:
        return full[self.offset : self.offset + self.rows]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # every torch call inside the emulator passes here: leave the others fast
        if not kwargs or kwargs.get("generator") is not self.generator or self.generator is None:
            return func(*args, **(kwargs or {}))
        b = self.rows
        if func in _SIZED or func is torch.randint:
            if func is torch.randint:
                size, rebuild = _randint_size(args, kwargs)
            else:
                size, rebuild = _size_arg(args, kwargs)
            if size and size[0] == b:
                a, kw = rebuild((self.total, *size[1:]))
                return self._mine(func(*a, **kw))
            return func(*args, **kwargs)
        if func in _LIKE:
            like = args[0]
            if like.ndim and like.shape[0] == b:
                full = like.new_empty((self.total, *like.shape[1:]))
                return self._mine(func(full, *args[1:], **kwargs))
            return func(*args, **kwargs)
        if func in _INPLACE:
            target = args[0]
            if target.ndim and target.shape[0] == b:
                full = torch.empty(
                    (self.total, *target.shape[1:]), dtype=target.dtype, device=target.device
                )
                getattr(full, func.__name__)(*args[1:], **kwargs)
                with torch.no_grad():
                    target.copy_(self._mine(full))
                return target
            return func(*args, **kwargs)
        if func in _UNSHARDABLE:
            raise RuntimeError(
                f"the emulator draws with {getattr(func, '__name__', func)}, which "
                "genfilter.distributed cannot shard across processes; run it in one process"
            )
        return func(*args, **kwargs)


class _ShardedEmulator:
    """The emulator seen by one rank: its methods run on the rank's block inside
    :class:`_ShardedNoise`; everything else is the wrapped emulator's."""

    _METHODS = ("sample", "predict_mean", "sample_posterior", "predict_obs_moments")

    def __init__(self, emulator, shards: ParticleShards, generator: torch.Generator) -> None:
        self._emulator = emulator
        self._shards = shards
        self._generator = generator

    def __getattr__(self, name: str):
        attr = getattr(self._emulator, name)
        if name not in self._METHODS or not callable(attr):
            return attr

        def call(x_prev: Tensor, *args, generator=None, **kwargs):
            if generator is not self._generator:
                raise RuntimeError(
                    f"{name}: a sharded emulator call must draw from the filter's generator"
                )
            with self._shards.noise(generator, x_prev.shape[0]):
                return attr(x_prev, *args, generator=generator, **kwargs)

        return call


# ------------------------------------------------------------------------- shards
class ParticleShards:
    r"""The split of :math:`N` particles into contiguous blocks, one per rank of a
    ``torch.distributed`` process group, and the collectives a particle filter needs.

    Rank :math:`r` holds particles ``offsets[r] : offsets[r] + sizes[r]``; the first
    :math:`N \bmod P` ranks hold one more.

    Arguments:
        n: The total number of particles :math:`N`.
        group: The process group (default: the world).

    Attributes:
        comm_seconds: Wall time spent in collectives and particle exchanges so far.
        moved: Particles received from another rank so far (each distinct ancestor once
            per receiving rank).
    """

    def __init__(self, n: int, group=None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "ParticleShards needs a torch.distributed process group: run under torchrun "
                "and call genfilter.distributed.init_from_env() first"
            )
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        n = int(n)
        if n < MIN_PARTICLES_PER_PROCESS * self.world_size:
            raise ValueError(
                f"particles: N = {n} over {self.world_size} processes gives fewer than "
                f"{MIN_PARTICLES_PER_PROCESS} per process; multi-process runs need at least "
                f"{MIN_PARTICLES_PER_PROCESS * self.world_size} (smaller batches use other "
                "matrix kernels, so results would not be bit-identical)"
            )
        self.n = n
        base, extra = divmod(n, self.world_size)
        self.sizes = [base + (1 if r < extra else 0) for r in range(self.world_size)]
        self.offsets = [sum(self.sizes[:r]) for r in range(self.world_size)]
        self.lo = self.offsets[self.rank]
        self.hi = self.lo + self.sizes[self.rank]
        self.comm_seconds = 0.0
        self.moved = 0
        # tensors travel on the backend's device: CUDA for NCCL, the CPU for gloo
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else None

    def __repr__(self) -> str:
        return (
            f"ParticleShards(n={self.n}, rank={self.rank}, world_size={self.world_size}, "
            f"rows={self.lo}:{self.hi})"
        )

    @property
    def local(self) -> slice:
        """This rank's rows of an ``(N, ...)`` tensor."""
        return slice(self.lo, self.hi)

    def owner(self, index: Tensor) -> Tensor:
        """The rank holding each global particle index ``(...,)`` (int64)."""
        bounds = torch.tensor(self.offsets[1:], dtype=torch.int64, device=index.device)
        return torch.bucketize(index, bounds, right=True)

    # ---------------------------------------------------------------- collectives
    @contextmanager
    def _timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.comm_seconds += time.perf_counter() - t0

    def all_gather(self, local: Tensor) -> Tensor:
        """Concatenation in rank order of every rank's block ``(sizes[r], ...)``:
        ``(N, ...)``, on every rank (exact copies: no arithmetic)."""
        if local.shape[0] != self.sizes[self.rank]:
            raise ValueError(
                f"all_gather: this rank holds {self.sizes[self.rank]} particles, got a "
                f"block of {local.shape[0]}"
            )
        return self._gather_rows(local, self.sizes)

    def _wire(self, t: Tensor) -> Tensor:
        """``t`` on the device the backend communicates from."""
        return t.to(self.device or "cpu")

    def _gather_rows(self, local: Tensor, sizes: list[int]) -> Tensor:
        with self._timed():
            width = max(sizes)
            buf = self._wire(local).new_zeros((width, *local.shape[1:]))
            buf[: local.shape[0]] = self._wire(local)
            parts = [torch.empty_like(buf) for _ in range(self.world_size)]
            dist.all_gather(parts, buf.contiguous(), group=self.group)
            full = torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])
            return full.to(local.device)

    def all_identical(self, local: Tensor) -> bool:
        """Whether all :math:`N` particles are equal (``(x == x[0]).all()`` over ranks)."""
        flag = bool((local == local[:1]).all())
        mine = torch.cat(
            [
                local[:1].reshape(1, -1).double(),
                torch.tensor([[float(flag)]], dtype=torch.float64, device=local.device),
            ],
            dim=1,
        )
        rows = self._gather_rows(mine, [1] * self.world_size)
        firsts, flags = rows[:, :-1], rows[:, -1]
        return bool((flags == 1).all()) and bool((firsts == firsts[:1]).all())

    def take(self, local: Tensor, ancestors: Tensor) -> Tensor:
        """This rank's block of ``x[ancestors]``, where ``x`` ``(N, *S)`` is spread over
        the ranks and ``ancestors`` ``(N,)`` (the same on every rank) are global indices.

        Only particles that change rank move: rank ``s`` sends rank ``r`` each distinct
        ancestor of ``r``'s block that ``s`` holds, once; the copies are made locally.
        """
        anc = ancestors.to(torch.int64)
        if anc.shape != (self.n,):
            raise ValueError(f"ancestors must have shape ({self.n},), got {tuple(anc.shape)}")
        src = self.owner(anc)
        me = self.rank
        with self._timed():
            # what every rank needs from every other: distinct ancestors, sorted
            need = {}
            for r in range(self.world_size):
                block = slice(self.offsets[r], self.offsets[r] + self.sizes[r])
                for s in range(self.world_size):
                    if s != r and (r == me or s == me):
                        idx = torch.unique(anc[block][src[block] == s])
                        if idx.numel():
                            need[(s, r)] = idx
            received = {}
            requests = []
            for (s, r), idx in need.items():
                if r == me:
                    buf = self._wire(local).new_empty((idx.numel(), *local.shape[1:]))
                    received[s] = (idx, buf)
                    requests.append(dist.irecv(buf, src=s, group=self.group))
            for (s, r), idx in need.items():
                if s == me:
                    send = self._wire(local[(idx - self.lo).to(local.device)]).contiguous()
                    requests.append(dist.isend(send, dst=r, group=self.group))
            for req in requests:
                req.wait()
        pool = [local]
        lookup = torch.full((self.n,), -1, dtype=torch.int64, device=anc.device)
        lookup[self.lo : self.hi] = torch.arange(self.hi - self.lo, device=anc.device)
        start = self.hi - self.lo
        for s in sorted(received):
            idx, buf = received[s]
            lookup[idx] = torch.arange(start, start + idx.numel(), device=anc.device)
            start += idx.numel()
            pool.append(buf.to(local.device))
            self.moved += idx.numel()
        pool_t = torch.cat(pool) if len(pool) > 1 else local
        return pool_t[lookup[anc[self.local]].to(local.device)]

    # ---------------------------------------------------------------- emulators
    @contextmanager
    def noise(self, generator: torch.Generator, rows: int):
        """Context for an emulator call on this rank's block, repeated ``k`` times per
        particle (``rows = k * sizes[rank]``, e.g. ``repeat_interleave``): draws from
        ``generator`` shaped ``(rows, ...)`` become the one-process draws for ``k N`` rows
        (module docstring, point 1)."""
        size = self.sizes[self.rank]
        if rows % size:
            raise RuntimeError(
                f"an emulator call on {rows} rows is not a whole number of copies of this "
                f"rank's {size} particles; it cannot be sharded"
            )
        k = rows // size
        with _ShardedNoise(generator, rows, k * self.n, k * self.lo):
            yield

    def emulator(self, emulator, generator: torch.Generator):
        """``emulator`` as seen by this rank (its calls draw noise as one process does)."""
        return _ShardedEmulator(emulator, self, generator)
