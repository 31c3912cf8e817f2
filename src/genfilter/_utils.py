"""Small shared helpers: generators and chunked evaluation."""

from __future__ import annotations

__all__ = [
    "make_generator",
    "chunks",
    "draw_seed",
    "check_states",
    "check_count",
    "whole_steps",
    "nonfinite_members",
    "check_device",
]

import operator
import os

import torch
from torch import Tensor


def make_generator(generator: torch.Generator | int | None = None) -> torch.Generator:
    """Returns a CPU ``torch.Generator``.

    ``Generator`` -> itself; ``int`` -> a generator seeded with it; ``None`` -> a generator
    seeded from the operating system (its seed is ``generator.initial_seed()``, so a run can
    always be repeated).
    """
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    elif isinstance(generator, int) and not isinstance(generator, bool):
        if generator < 0:
            raise ValueError(f"seed must be a non-negative integer, got {generator}")
        seed = generator
    else:
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}"
        )
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def draw_seed(generator: torch.Generator | None) -> int:
    """Draws a 62-bit integer seed from ``generator`` (the global generator if None)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def chunks(n: int, chunk_size: int | None):
    """Yields ``slice`` objects covering ``range(n)`` in pieces of ``chunk_size``."""
    if chunk_size is None or chunk_size >= n:
        yield slice(0, n)
        return
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


def check_states(x: Tensor, state_shape: tuple[int, ...], name: str = "x_prev") -> Tensor:
    """Validates a batch of states: a floating tensor of shape ``(N, *state_shape)``,
    all finite.  Raises ``ValueError`` naming the argument otherwise."""

    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if tuple(x.shape[1:]) != tuple(state_shape) or x.ndim != len(state_shape) + 1:
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, state_shape))}), got {tuple(x.shape)}"
        )
    bad = nonfinite_members(x)
    if bad.numel():
        raise ValueError(
            f"{name} contains non-finite values in {bad.numel()} particle(s), "
            f"first indices {bad[:5].tolist()}"
        )
    return x


def check_count(value: int, name: str, minimum: int) -> int:
    """Validates an integer count ``>= minimum`` (error naming ``name``); returns it."""
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= minimum
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return operator.index(value)


def whole_steps(interval: float, dt: float) -> int:
    """Number of internal steps ``dt`` in one snapshot ``interval``; it must be whole."""
    steps = round(interval / dt)
    if steps < 1 or abs(steps * dt - interval) > 1e-9 * max(1.0, interval):
        raise ValueError(
            f"interval ({interval}) must be a whole number of internal steps dt ({dt})"
        )
    return steps


def nonfinite_members(x: Tensor) -> Tensor:
    """Indices of the members (rows of ``x`` ``(N, *S)``) with a NaN or ``±inf`` value."""
    return (~torch.isfinite(x).flatten(1).all(dim=1)).nonzero().flatten()


def check_device(device: str | torch.device, name: str = "--device") -> torch.device:
    """``device`` as a :class:`torch.device`; a name torch does not know, or ``cuda`` on a
    machine without CUDA, is a one-line ``ValueError`` naming ``name``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must name a torch device (cpu, cuda), got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {device}: no CUDA device is available here")
    return dev
