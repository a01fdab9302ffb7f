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
import datetime as _dt
import importlib.metadata
import math
import os
import platform
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import diffusers
import numpy as np
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


# ------------------------------------------------------------------ where and with what a number was measured

def _version() -> str:
    try:
        return importlib.metadata.version("decinv")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_info() -> dict:
    """The commit the package runs from and whether tracked files differ from it (None when git cannot tell)."""
    root = Path(__file__).resolve().parents[2]  # the repository: decinv/core/measure.py -> ../..
    info = {"commit": None, "dirty": None}
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode == 0:
            info["commit"] = head.stdout.strip()
            status = run("status", "--porcelain", "--untracked-files=no")
            info["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def environment(device: torch.device) -> dict:
    """Where and with what the numbers were measured."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    env = {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "cpu_name": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "decinv": _version(),
        "git_commit": None,
        "git_dirty": None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    git = git_info()
    env["git_commit"], env["git_dirty"] = git["commit"], git["dirty"]
    return env


def jsonable(obj):
    """``obj`` made plain Python for strict JSON records: dicts (keys as text), lists and tuples recursively; numpy
    arrays and scalars, 0-d tensors and Python floats as numbers, with NaN and inf as null; dtypes, devices and paths
    as text. Used by the benchmark records and the dataset jobs' manifests."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, torch.Tensor) and obj.ndim == 0:
        return jsonable(obj.item())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    return obj
