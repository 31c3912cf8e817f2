"""Small shared helpers: generators and chunked evaluation."""

from __future__ import annotations

__all__ = ["make_generator", "chunks", "draw_seed"]

import os

import torch


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
