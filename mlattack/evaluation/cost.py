"""What one attack call costs: network passes and peak memory, measured around the call (the study's missing
computational analysis; wall time is taken by the attack loop itself).

Passes are counted, not derived from ``nb_iter``: a forward hook on the attacked network adds the rows (samples) of
every forward call, and on every output that requires a gradient it registers a gradient hook that adds the rows of
every backward pass through that output. ML-DP's and MLA-LP's per-label Jacobian pushes C cotangents per sample
through the network (one backward pass per label on CPU, one vmapped pass elsewhere), so it counts as C backward
passes per sample either way (a vmapped gradient is counted by its physical rows). Judging the returned images happens outside the measured call: the counts are the attack's own
work. An attack that samples several restarts or a binary search pays for each pass it makes.

Peak memory is what the call needed above what was in use when it started:

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated`` before.
- CPU (Linux): the kernel's resident-set high-water mark (``VmHWM``) is reset before the call
  (``/proc/self/clear_refs``) after freed heap pages are handed back (``malloc_trim``), and the peak is ``VmHWM``
  after minus ``VmRSS`` before. ``tracemalloc`` cannot do this job: PyTorch allocates tensors outside Python's
  allocator, so it sees none of them; ``getrusage``'s ``ru_maxrss`` is the process's lifetime high-water mark
  and cannot be reset. Where neither works (not Linux), the peak is NaN.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

MIB = 2**20
_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


@dataclass
class AttackCost:
    """Totals over one attack call: network rows pushed forward and backward, peak memory in bytes."""

    forwards: int = 0
    backwards: int = 0
    peak_bytes: float = float("nan")

    def per_sample(self, samples: int) -> dict[str, float]:
        """The record fields: passes per attacked sample and the call's peak memory in MiB."""
        n = max(int(samples), 1)
        return {
            "forwards": self.forwards / n,
            "backwards": self.backwards / n,
            "peak_mb": self.peak_bytes / MIB,
        }


def _rows(t: torch.Tensor) -> int:
    """Rows of ``t`` as computed: a tensor inside ``torch.func`` transforms is unwrapped to its physical batch (a
    vmap over C cotangents makes C times the rows the transformed function sees)."""
    per_row = t[0].numel() if t.ndim else 1
    functorch = getattr(torch._C, "_functorch", None)  # no public API tells a batched tensor's physical size
    if functorch is not None:
        while functorch.is_batchedtensor(t) or functorch.is_gradtrackingtensor(t):
            t = functorch.get_unwrapped(t)
    return t.numel() // max(per_row, 1) if t.ndim else 1


def _count_hook(cost: AttackCost):
    def on_backward(grad: torch.Tensor) -> None:
        cost.backwards += _rows(grad)

    def on_forward(module: nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            cost.forwards += _rows(output)
            if output.requires_grad:
                output.register_hook(on_backward)

    return on_forward


def _status_bytes(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, looked up once per process (``measure_cost`` runs around every attack batch)."""
    return ctypes.CDLL(ctypes.util.find_library("c"))


def _cpu_start() -> int | None:
    """Reset the resident-set high-water mark; the resident set size now (None where this is impossible)."""
    try:
        _libc().malloc_trim(0)  # freed-but-kept heap pages would otherwise be reused without raising the mark
        _CLEAR_REFS.write_text("5")  # "5": reset the peak RSS to the current RSS (Linux >= 4.0)
        return _status_bytes("VmRSS")
    except (OSError, AttributeError, KeyError, TypeError):
        return None


def peak_memory_kind(device: torch.device) -> str:
    """What the peak memory of an attack on ``device`` measures (for captions)."""
    if device.type == "cuda":
        return "CUDA max_memory_allocated above the start"
    return "resident-set high-water mark above the start (Linux)" if _STATUS.is_file() else "not measured"


@contextlib.contextmanager
def measure_cost(net: nn.Module, device: torch.device) -> Iterator[AttackCost]:
    """Count ``net``'s passes and the peak memory of the code inside; the hooks are removed on exit."""
    cost = AttackCost()
    handle = net.register_forward_hook(_count_hook(cost))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
    else:
        start = _cpu_start()
    try:
        yield cost
    finally:
        handle.remove()
        if cuda:
            cost.peak_bytes = float(torch.cuda.max_memory_allocated(device) - start)
        elif start is not None:
            with contextlib.suppress(OSError, KeyError):
                cost.peak_bytes = float(max(_status_bytes("VmHWM") - start, 0))
