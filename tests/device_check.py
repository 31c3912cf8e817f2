"""A CPU stand-in for a second device, to find code that mixes devices without a GPU.

On a GPU, an operation whose tensor arguments live on two devices fails ("Expected all
tensors to be on the same device").  On a CPU-only machine every tensor is on the CPU, so
such code passes.  :class:`DeviceCheck` tags the tensors that would live on the "data
device" (``cpu:0`` here: what ``.to(DEVICE)`` or ``device=DEVICE`` produce, and everything
computed from them) and records every operation that combines a tagged tensor with an
untagged one of one value or more — what CUDA would refuse.  CPU scalars (0-dim tensors)
and index tensors in ``x[idx]`` are allowed, as CUDA allows them; drawing on the data device
with a CPU generator, and ``.numpy()`` of a tagged tensor, are recorded too.

Usage::

    with DeviceCheck(exempt=emulator) as check:
        ...  # run with particles .to(DEVICE)
    assert not check.mismatches, check.report()
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("cpu", 0)
"""The stand-in data device: a CPU device with an index, told apart from plain ``cpu``."""


class Tagged(torch.Tensor):
    """A CPU tensor that stands for one on :data:`DEVICE`."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    @property
    def device(self) -> torch.device:  # what code reads to place new tensors
        return DEVICE


_TO = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.type_as, torch.Tensor.new_tensor}
_INDEX = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}


def _is_dev(d) -> bool:
    if isinstance(d, Tagged):
        return True
    if isinstance(d, str):
        d = torch.device(d)
    return isinstance(d, torch.device) and d == DEVICE


class DeviceCheck(TorchFunctionMode):
    """Records device mixing while active (module docstring)."""

    def __init__(self, exempt: torch.nn.Module | None = None) -> None:
        super().__init__()
        # the parameters and buffers of ``exempt`` count as moved to the data device
        self.exempt = set()
        if exempt is not None:
            self.exempt = {id(t) for t in (*exempt.parameters(), *exempt.buffers())}
        self.mismatches: list[str] = []

    def _dev(self, t) -> bool:
        return isinstance(t, Tagged) or id(t) in self.exempt

    def _record(self, what: str) -> None:
        stack = traceback.extract_stack()[:-2]
        ours = [f for f in stack if "/genfilter/" in f.filename]
        where = " < ".join(
            f"{f.filename.split('/src/')[-1]}:{f.lineno}" for f in reversed((ours or stack)[-3:])
        )
        self.mismatches.append(f"{what} at {where}")

    def report(self) -> str:
        seen = dict.fromkeys(self.mismatches)
        return "\n".join(seen)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        device_arg = kwargs.get("device")
        if func is torch.Tensor.cpu:
            return _untag(func(*args, **kwargs))
        if func in _TO:
            target = [a for a in (*args[1:], *kwargs.values()) if _is_dev(a)]
            to_cpu = any(
                (isinstance(a, torch.device) and a == torch.device("cpu")) or a == "cpu"
                for a in (*args[1:], *kwargs.values())
            )
            out = func(*args, **kwargs)
            if target or (self._dev(args[0]) and not to_cpu):
                return _tag(out)
            return _untag(out)
        if name == "numpy" and tensors and self._dev(tensors[0]):
            self._record("numpy() of a data-device tensor")
        dev_in = any(self._dev(t) for t in tensors)
        if _is_dev(device_arg):
            gen = kwargs.get("generator")
            if gen is not None and gen.device.type == "cpu":
                self._record(f"{name}: a CPU generator drawing on the data device")
            dev_in = True
        if dev_in:
            check = tensors
            if func in _INDEX:
                check = [args[0]] + ([args[2]] if func is torch.Tensor.__setitem__ else [])
                check = [t for t in check if isinstance(t, torch.Tensor)]
            plain = [t for t in check if not self._dev(t) and t.ndim > 0]
            if plain and any(self._dev(t) for t in check):
                shapes = ", ".join(str(tuple(t.shape)) for t in plain[:3])
                self._record(f"{name}: CPU tensor(s) {shapes} with data-device tensors")
        out = func(*args, **kwargs)
        if device_arg is not None and not _is_dev(device_arg):
            return out
        return _tag(out) if dev_in else out


def _tag(out):
    return tree_map(
        lambda t: (
            t.as_subclass(Tagged)
            if isinstance(t, torch.Tensor) and not isinstance(t, (Tagged, torch.nn.Parameter))
            else t
        ),
        out,
    )


def _untag(out):
    return tree_map(
        lambda t: t.as_subclass(torch.Tensor) if isinstance(t, Tagged) else t,
        out,
    )
