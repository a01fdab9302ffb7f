"""Wall time and peak memory of a block of work, on CPU or CUDA, with what is measured stated exactly.

* CUDA: time between two synchronisations; memory = ``torch.cuda.max_memory_allocated`` during the block
  (absolute: model weights + activations + inputs held by PyTorch's allocator), as the paper reports it.
* CPU (Linux): time with ``time.perf_counter``; memory = the process's peak resident set size during the block
  minus its resident size at the start (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, with
  ``malloc_trim`` first so that memory freed earlier is returned to the OS and cannot hide the peak). It is the
  *extra* memory the block needed, weights excluded. ``None`` where the platform offers no such counter.
"""

from __future__ import annotations

import ctypes
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


@dataclass
class Measurement:
    seconds: float = float("nan")
    peak_memory_bytes: int | None = None
    memory_kind: str = ""


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work so that a clock reading means something."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _status_bytes(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", _STATUS.read_text()).group(1)) * 1024


def _reset_cpu_peak() -> int | None:
    """Return the current RSS after resetting the peak, or None if the kernel offers no resettable peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS")
    except (OSError, AttributeError):
        return None


@contextmanager
def measure(device: torch.device | str = "cpu"):
    """``with measure(device) as m: ...`` then read ``m.seconds`` and ``m.peak_memory_bytes``.

    Do not nest two measurements: each one resets the process-wide peak (RSS on CPU, the allocator's peak on CUDA)
    when it starts, so an inner block erases what the outer one had seen before it.
    """
    device = torch.device(device)
    result = Measurement()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.memory_kind = "torch.cuda.max_memory_allocated (absolute)"
        baseline = None
    else:
        baseline = _reset_cpu_peak()
        result.memory_kind = "peak RSS minus RSS at start (extra)" if baseline is not None else "unavailable"
    start = time.perf_counter()
    try:
        yield result
    finally:
        synchronize(device)
        result.seconds = time.perf_counter() - start
        if device.type == "cuda":
            result.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
        elif baseline is not None:
            result.peak_memory_bytes = max(0, _status_bytes("VmHWM") - baseline)
