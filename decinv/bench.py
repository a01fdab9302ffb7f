"""Benchmark suites: how much faster, smaller and more precision-flexible gradient-free inversion really is.

    python -m decinv.bench --suite overhead|tradeoff|video|dtype|video3d|acceleration|all [--model tiny] [--device auto] [--threads 2]
                           [--repeat N] [--quick] --out results/<name>.json
    decinv bench ...            (the same, through the package's command line)

Every suite is a function returning a JSON-ready dict with all raw timings (every repeat), and a list of
``ratios`` (name, value, target, meaning). The JSON file also records the device (CPU model from /proc/cpuinfo or
GPU name), torch threads, library versions, git commit, date and the load average, and the command prints a ratio
table last. Timing protocol: warm-up runs first (discarded), then ``repeat`` repeats; medians are reported; on CUDA
every clock reading follows ``torch.cuda.synchronize``; torch's intra-op thread count is fixed (``--threads``)
and stored. Times come from `decinv.invert`'s own clocks (``InversionResult.seconds`` and ``trace.seconds``,
synchronised on CUDA), peak memory from `decinv.measure` (CUDA: absolute ``max_memory_allocated``; CPU: the *extra*
peak RSS of the call, model weights excluded -- not the same quantity as the paper's GPU numbers).

Suites (see each function's docstring for the exact definition of each ratio):

* `overhead`: is one iteration of a solver as cheap as the network passes it needs? (bare-pass ratios ~ 1)
* `tradeoff`: NMSE vs time for gradient-based Adam (lr 0.1, warm-up + cosine) and gradient-free Adam (lr 0.01,
  the paper's schedule) on generated instances; the time gradient-free needs to reach each gradient-based NMSE.
* `video`: peak memory and per-iteration time vs number of frames, with and without chunking.
* `dtype`: fp32 / bf16 / fp16 gradient-free Adam, and whether fp16 gradient-based Adam fails.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import decinv
from decinv.measure import synchronize
from decinv.metrics import mean_ci

SCHEMA = "decinv-bench/1"
SUITE_NAMES = ("overhead", "tradeoff", "video", "dtype")
MIB = 2**20
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_HALF_NOTE = ("CPU run: this CPU has no fast fp16/bf16 convolution kernels, so half-precision timings here are "
                 "NOT the paper's GPU claim (16-bit is faster on GPUs); only the accuracy and failure columns "
                 "carry over.")
PAPER_VIDEO_MEMORY_RATIO = 7.13 / 64.7  # LaVie, grad-free 16-bit vs grad-based 32-bit peak memory (Fig. 3b)


# ---------------------------------------------------------------------------------------------------------------
# environment, timing, models


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_info() -> dict:
    """The commit the package runs from and whether tracked files differ from it (None when git cannot tell)."""
    root = Path(__file__).resolve().parent.parent
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
    import diffusers

    device = torch.device(device)
    cuda = device.type == "cuda"
    env = {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "cpu_name": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "decinv": decinv.__version__,
        "git_commit": None,
        "git_dirty": None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    git = git_info()
    env["git_commit"], env["git_dirty"] = git["commit"], git["dirty"]
    return env


def _timed(fn, device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``, with the device synchronised before and after."""
    synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu


def _per_iteration(trace_seconds) -> float:
    """Seconds per iteration from a trace's cumulative clock: (t_K - t_1) / (K - 1).

    ``trace.seconds[k]`` is the time from the start of `decinv.invert` (before E(x)) to the end of iteration k, so
    the difference drops the initial E(x) and the first iteration (which also pays one-off allocations)."""
    s = np.asarray(trace_seconds, dtype=float)
    return float((s[-1] - s[0]) / (len(s) - 1)) if len(s) >= 2 else math.nan


def _median(values) -> float:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.median(v)) if v else math.nan


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b and np.isfinite(a) and np.isfinite(b) else math.nan


@contextmanager
def _quiet_diffusers():
    """Silence diffusers' 'modules that should be kept in float32' notice when casting models here."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def _model_params(model) -> float:
    return sum(p.numel() for p in model.vae.parameters()) / 1e6


def _resolve_model(model, device, dtype=None, need_pipeline: bool = False):
    """(LatentModel, pipeline or None). ``model``: "tiny", any `decinv.load_model` source, or a LatentModel."""
    from decinv.models import BUNDLED, LatentModel, ModelNotAvailableError, load_pipeline

    with _quiet_diffusers():
        if isinstance(model, LatentModel):
            return model.to(device, dtype), None
        if need_pipeline and model in BUNDLED:
            try:
                pipeline = load_pipeline(model, device=device, dtype=dtype)
                return pipeline.vae, pipeline
            except ModelNotAvailableError:
                pass  # UNet not installed: fall back to on-manifold instances
        return decinv.load_model(model, device=device, dtype=dtype), None


def native_size(model) -> int:
    """Default image side for a suite: a bundled miniature's training size (v2: 128, v1: 64); 64 for any other
    model (hub autoencoders at 512 are GPU work; pass ``size`` for them)."""
    from decinv.models import BUNDLED

    return int(model.vae.config.sample_size) if model.name in BUNDLED else 64


def _model_info(model) -> dict:
    return {"name": model.name, "repr": repr(model), "params_millions": round(_model_params(model), 4),
            "downsample": model.downsample, "latent_channels": model.latent_channels, "dtype": str(model.dtype)}


def _images(model, batch: int, size: int):
    """``batch`` 8-bit images (B, 3, size, size) and their latents: frames of a camera pan (real picture content)."""
    from decinv.experiments import camera_pan

    clip = camera_pan(model, batch, size, size)
    return clip.x[0], clip.z_true[0]


class _NullModel:
    """Shapes of ``like`` without a network: E = strided subsampling, D = nearest upsampling (channels cycled).

    Running a solver on it measures the solver's own per-step bookkeeping (optimizer, clones, norms, finiteness
    check, trace) with the autoencoder's cost removed."""

    def __init__(self, like):
        self.downsample, self.latent_channels = like.downsample, like.latent_channels
        self.device, self.dtype = like.device, like.dtype

    def encode(self, x, chunk_size=None, *, check=True, finite=True):
        f, c = self.downsample, self.latent_channels
        return x[:, torch.arange(c) % x.shape[1], ::f, ::f].to(self.dtype)

    def decode(self, z, chunk_size=None, *, grad=False, check=True):
        f = self.downsample
        with torch.set_grad_enabled(grad):
            return z[:, torch.arange(3) % z.shape[1]].repeat_interleave(f, -2).repeat_interleave(f, -1)


def _run(x, model, method, steps, **kw):
    """`decinv.invert` without progress bar; also records the process CPU time (all threads) at the end of every
    iteration, counted from just before the call, as ``result.cpu_trace`` (and ``result.cpu_seconds`` in all).

    With one torch thread on a CPU, CPU time is what the wall time would be on an otherwise idle machine: a
    robust clock on a shared machine, where other processes inflate wall times at random."""
    cpu = []
    start = time.process_time()
    result = decinv.invert(x, model, method, steps, progress=False,
                           callback=lambda info: cpu.append(time.process_time() - start), **kw)
    result.cpu_seconds = time.process_time() - start
    result.cpu_trace = np.asarray(cpu[: len(result.trace)], dtype=float)
    return result


# ---------------------------------------------------------------------------------------------------------------
# suites


def overhead(model="tiny", *, device="auto", batch: int = 16, size: int | None = None, steps: int = 12, repeat: int = 5,
             inner: int = 3, quick: bool = False, progress: bool = True) -> dict:
    """Per-iteration cost of each solver relative to the bare network passes one iteration needs.

    Same batch of ``batch`` images (size x size) for everything; measurements are interleaved (each repeat times
    the bare passes, then a gradient-free run, then the bare backward, then a gradient-based run), so that load
    drift on a shared machine hits both sides of a ratio alike.

    * ``gradfree_per_iter_over_bare_ED`` = [per-iteration time of ``gradfree-adam``] / [time of one bare
      ``model.encode(model.decode(z))`` forward, no autograd]. Per-iteration time = (t_K - t_1) / (K - 1) from the
      run's cumulative trace clock (differences of ``trace.seconds``; excludes the initial E(x) and iteration 1),
      median over ``repeat`` runs of ``steps`` iterations; bare time = median of ``repeat * inner`` calls.
      Target <= 1.05: the solver adds at most 5 % to the network's cost.
    * ``gradient_per_iter_over_bare_Dfb`` = [per-iteration time of ``gradient-adam``] / [time of one bare
      ``((D(z) - x)^2).sum().backward()`` to z with the weights frozen]; same estimators.
    * ``gradient_over_gradfree_per_iter``: the per-iteration price of the gradient (paper SD2.1: 31.7/17.7 = 1.8).
    * ``*_min``: the same ratios from the *fastest* run/call on each side (less sensitive to other processes).
    * ``*_cpu``: the same ratios with process CPU time instead of wall time (see `_run`; a robust stand-in for
      idle-machine wall time with one torch thread on a CPU; meaningless on CUDA).
    * ``bookkeeping``: per-iteration time of both solvers on a network-free `_NullModel` of the same shapes,
      i.e. the solver's own overhead per step (Adam, clones, norms, finiteness check, NMSE trace), in seconds and
      as a fraction of the bare pass.
    """
    if quick:
        batch, size, steps, repeat, inner = 2, 32, 4, 2, 2
    device = decinv.models.resolve_device(device)
    model, _ = _resolve_model(model, device)
    size = size or native_size(model)
    x, z_true = _images(model, batch, size)
    z = model.encode(x, check=False)

    def bare_ed():
        model.encode(model.decode(z, check=False), check=False)

    def bare_dfb():
        zz = z.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            diff = model.decode(zz, grad=True, check=False) - x
            diff.pow(2).reshape(len(diff), -1).sum(1).sum().backward()

    # warm-up: every code path once
    bare_ed(), bare_dfb()
    _run(x, model, "gradfree-adam", 2), _run(x, model, "gradient-adam", 2)
    raw = {k: [] for k in ("bare_ED_seconds", "bare_Dfb_seconds", "gradfree_per_iter", "gradient_per_iter",
                           "gradfree_step_seconds", "gradient_step_seconds", "gradfree_total_seconds",
                           "gradient_total_seconds", "bare_ED_cpu_seconds", "bare_Dfb_cpu_seconds",
                           "gradfree_per_iter_cpu", "gradient_per_iter_cpu")}
    for _ in tqdm(range(repeat), desc="overhead", disable=not progress):
        for bare, key, method, short in ((bare_ed, "bare_ED", "gradfree-adam", "gradfree"),
                                         (bare_dfb, "bare_Dfb", "gradient-adam", "gradient")):
            for wall, cpu in (_timed(bare, device) for _ in range(inner)):
                raw[f"{key}_seconds"].append(wall)
                raw[f"{key}_cpu_seconds"].append(cpu)
            r = _run(x, model, method, steps)
            raw[f"{short}_per_iter"].append(_per_iteration(r.trace.seconds))
            raw[f"{short}_per_iter_cpu"].append(_per_iteration(r.cpu_trace))
            raw[f"{short}_step_seconds"].append(np.diff(r.trace.seconds).tolist())
            raw[f"{short}_total_seconds"].append(r.seconds)

    # the solvers' own per-step cost, network removed (with and without NMSE tracing)
    null = _NullModel(model)
    book = {}
    null_steps = 50 if not quick else 5
    for method in ("gradfree-adam", "gradient-adam"):
        for traced in (False, True):
            kw = {"z_true": z_true} if traced else {}
            _run(x, null, method, 3, **kw)
            runs = [_run(x, null, method, null_steps, **kw) for _ in range(3)]
            per = [_per_iteration(r.trace.seconds) for r in runs]
            cpu = [_per_iteration(r.cpu_trace) for r in runs]
            book[f"{method}{'+nmse' if traced else ''}"] = {"per_iter_seconds": per, "median": _median(per),
                                                           "per_iter_cpu_seconds": cpu, "median_cpu": _median(cpu)}

    ed, dfb = _median(raw["bare_ED_seconds"]), _median(raw["bare_Dfb_seconds"])
    gf, gb = _median(raw["gradfree_per_iter"]), _median(raw["gradient_per_iter"])
    out = {
        "setting": {"model": _model_info(model), "device": str(device), "batch": batch, "size": size,
                    "steps": steps, "repeat": repeat, "inner": inner, "threads": torch.get_num_threads(),
                    "per_iteration_estimator": "(trace.seconds[K-1] - trace.seconds[0]) / (K - 1): differences of "
                    "the run's cumulative clock, excluding the initial E(x) and iteration 1; median over runs",
                    "bare_estimator": "median over repeat*inner synchronised calls"},
        "raw": raw,
        "median_seconds": {"bare_ED": ed, "bare_Dfb": dfb, "gradfree_per_iter": gf, "gradient_per_iter": gb},
        "bookkeeping_per_iter_seconds": book,
        "gradfree_per_iter_over_bare_ED": _ratio(gf, ed),
        "gradient_per_iter_over_bare_Dfb": _ratio(gb, dfb),
        "gradient_over_gradfree_per_iter": _ratio(gb, gf),
        "bare_Dfb_over_bare_ED": _ratio(dfb, ed),
        "gradfree_per_iter_over_bare_ED_min": _ratio(min(raw["gradfree_per_iter"]), min(raw["bare_ED_seconds"])),
        "gradient_per_iter_over_bare_Dfb_min": _ratio(min(raw["gradient_per_iter"]), min(raw["bare_Dfb_seconds"])),
        "gradfree_per_iter_over_bare_ED_cpu": _ratio(_median(raw["gradfree_per_iter_cpu"]),
                                                     _median(raw["bare_ED_cpu_seconds"])),
        "gradient_per_iter_over_bare_Dfb_cpu": _ratio(_median(raw["gradient_per_iter_cpu"]),
                                                      _median(raw["bare_Dfb_cpu_seconds"])),
        "gradient_over_gradfree_per_iter_cpu": _ratio(_median(raw["gradient_per_iter_cpu"]),
                                                      _median(raw["gradfree_per_iter_cpu"])),
    }
    out["bookkeeping_fraction"] = {
        "gradfree-adam": _ratio(book["gradfree-adam+nmse"]["median"], ed),
        "gradient-adam": _ratio(book["gradient-adam+nmse"]["median"], dfb),
    }
    out["ratios"] = [
        _row("overhead", "grad-free per-iteration / bare E(D(z))", out["gradfree_per_iter_over_bare_ED"], "<= 1.05",
             f"median; fastest-vs-fastest {out['gradfree_per_iter_over_bare_ED_min']:.3f}; "
             f"CPU-time {_fmt(out['gradfree_per_iter_over_bare_ED_cpu'], 3)}"),
        _row("overhead", "grad-based per-iteration / bare D fwd+bwd", out["gradient_per_iter_over_bare_Dfb"], "~1",
             f"median; fastest-vs-fastest {out['gradient_per_iter_over_bare_Dfb_min']:.3f}; "
             f"CPU-time {_fmt(out['gradient_per_iter_over_bare_Dfb_cpu'], 3)}"),
        _row("overhead", "grad-based / grad-free per-iteration time", out["gradient_over_gradfree_per_iter"],
             "paper SD2.1 1.8",
             f"B={batch}, {size}x{size}; CPU-time {_fmt(out['gradient_over_gradfree_per_iter_cpu'], 3)}"),
        _row("overhead", "solver bookkeeping / bare pass (grad-free)", out["bookkeeping_fraction"]["gradfree-adam"],
             "small", f"{book['gradfree-adam+nmse']['median'] * 1e3:.2f} ms/step on a network-free model "
             f"({book['gradfree-adam+nmse']['median_cpu'] * 1e3:.2f} ms CPU)"),
        _row("overhead", "solver bookkeeping / bare pass (grad-based)", out["bookkeeping_fraction"]["gradient-adam"],
             "small", f"{book['gradient-adam+nmse']['median'] * 1e3:.2f} ms/step on a network-free model "
             f"({book['gradient-adam+nmse']['median_cpu'] * 1e3:.2f} ms CPU)"),
    ]
    return out


def _fmt(v, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else "n/a"


def _row(suite, name, value, target, note="") -> dict:
    value = float(value) if value is not None and not isinstance(value, str) else value
    return {"suite": suite, "ratio": name, "value": value, "target": target, "note": note}


def _instances(model, pipeline, n: int, seed: int, size: int):
    """Generated instances at the pipeline's own size when there is a pipeline, else on-manifold size x size crops."""
    from decinv.experiments import generated_instances, real_instances

    if pipeline is not None:
        return generated_instances(model, pipeline, n, seed)
    return real_instances(model, n, size, size, seed)


def _point(result, k: int) -> dict:
    """NMSE (mean dB and 95 % CI over instances) and time after iteration ``k`` (1-based) of ``result``."""
    nmse = result.trace.nmse_db[k - 1]
    mean, ci = mean_ci(nmse)
    return {"steps": k, "nmse_db": mean, "nmse_ci95": ci, "nmse_db_per_instance": nmse.tolist(),
            "seconds": float(result.trace.seconds[k - 1]), "cpu_seconds": float(result.cpu_trace[k - 1]),
            "peak_memory_bytes": result.peak_memory_bytes, "status": result.status}


def time_to_reach(target: float, curve: list[dict], key: str = "seconds") -> dict:
    """When does a (steps, seconds, nmse_db) curve first reach NMSE <= ``target``?

    Linear interpolation *in steps*: between consecutive grid points k_a < k_b with nmse_a > target >= nmse_b, the
    fractional step count k* = k_a + (target - nmse_a) / (nmse_b - nmse_a) (k_b - k_a), and its time is the
    measured times interpolated linearly at k* (time is ~linear in steps). If the first point already reaches it,
    its own time is used (an upper bound). Returns ``reached`` False when no grid point reaches the target.
    ``key``: which time to interpolate ("seconds"; also "cpu_seconds" when the points carry it, as ``cpu_seconds``).
    """
    cpu = lambda p: p.get("cpu_seconds") if key == "seconds" else None
    pts = sorted(curve, key=lambda p: p["steps"])
    for i, p in enumerate(pts):
        if p["nmse_db"] <= target:
            if i == 0:
                return {"reached": True, "steps": float(p["steps"]), "seconds": p[key], "cpu_seconds": cpu(p),
                        "bracket": [p["steps"]], "peak_memory_bytes": p["peak_memory_bytes"]}
            a = pts[i - 1]
            w = (target - a["nmse_db"]) / (p["nmse_db"] - a["nmse_db"])
            mems = [m for m in (a["peak_memory_bytes"], p["peak_memory_bytes"]) if m is not None]
            lerp = lambda u, v: None if u is None or v is None else u + w * (v - u)
            return {"reached": True, "steps": a["steps"] + w * (p["steps"] - a["steps"]),
                    "seconds": lerp(a[key], p[key]), "cpu_seconds": lerp(cpu(a), cpu(p)),
                    "bracket": [a["steps"], p["steps"]], "peak_memory_bytes": max(mems) if mems else None}
    return {"reached": False, "steps": None, "seconds": None, "cpu_seconds": None, "bracket": None,
            "peak_memory_bytes": None, "best_nmse_db": min(p["nmse_db"] for p in pts) if pts else None}


def tradeoff(model="tiny", *, device="auto", n: int = 32, seed: int = 0, size: int | None = None,
             gradient_steps=(20, 30, 50, 100), gradient_settings=(("0.1 scheduled", 0.1, "warmup-cosine"),),
             gradfree_steps=(10, 20, 30, 50, 75, 100, 150, 200), gradfree_lr: float = 0.01,
             schedule_cap: int = 100, repeat: int = 1, quick: bool = False, progress: bool = True) -> dict:
    """NMSE-vs-time Pareto comparison on generated instances (paper Fig. 3 / Table S1 protocol, tiny scale).

    Instances: ``n`` DDIM samples z* of the tiny LDM, x = 8-bit D(z*) (or on-manifold latents of real crops when
    no UNet is installed; ``instances`` says which). Every point is the mean over instances of the final
    10 log10 NMSE (95 % t-CI), and its time is the wall time of `decinv.invert` from its start (initial E(x)
    included, as in the paper) to the end of the last iteration (``trace.seconds``), median over ``repeat`` runs.

    Gradient-based Adam: one separate run per (setting, steps), since [14]'s schedule depends on the horizon.
    Gradient-free Adam (lr 0.01, paper schedule with horizon min(K, ``schedule_cap``)): one run per K below the
    cap; all K >= cap share the same schedule prefix, so they are read off *one* run of the largest such K
    (identical iterates; time to iteration K from the same clock; its peak memory is that run's).

    For every gradient-based point: ``time_to_reach`` on the gradient-free curve (linear interpolation in steps),
    ``time_ratio`` = t_gradient / t_gradfree_to_reach (> 1: gradient-free is faster); ``time_ratio_cpu``: the same
    with process CPU time (robust on a shared CPU with one thread, see `_run`); ``time_ratio_fitted``: the same
    with each curve's times replaced by a straight-line fit of time vs steps; ``memory_ratio`` =
    gradient-free peak memory / gradient-based peak memory (< 1: smaller). ``headline``: does gradient-free reach
    the best NMSE of the gradient-based runs with the most iterations (the paper's 100), or come within 1 dB,
    and at what time ratio (target >= 3; the paper reports up to 5x).
    """
    if quick:
        n, size, gradient_steps, gradfree_steps, schedule_cap = 2, 32, (3, 6), (2, 4, 6, 8), 6
    device = decinv.models.resolve_device(device)
    model, pipeline = _resolve_model(model, device, need_pipeline=True)
    size = size or native_size(model)
    inst = _instances(model, pipeline, n, seed, size)
    x, z_true = inst.x, inst.z_true
    encoder_nmse = decinv.nmse_db(model.encode(x, check=False), z_true).cpu().numpy()
    cap = schedule_cap
    separate = sorted(k for k in gradfree_steps if k < cap)
    prefix = sorted(k for k in gradfree_steps if k >= cap)

    # warm-up (discarded)
    _run(x, model, "gradfree-adam", 2, z_true=z_true)
    _run(x, model, "gradient-adam", 2, z_true=z_true)

    grad_jobs = [("gradient-adam", name, lr, sched, k) for name, lr, sched in gradient_settings for k in gradient_steps]
    free_jobs = [("gradfree-adam", "0.01 scheduled", gradfree_lr, "paper", k) for k in separate]
    if prefix:
        free_jobs.append(("gradfree-adam", "0.01 scheduled", gradfree_lr, "paper", max(prefix)))
    # alternate the two methods, so that slow drifts in machine load hit both curves alike
    jobs = [j for pair in itertools.zip_longest(grad_jobs, free_jobs) for j in pair if j is not None]
    points = {"gradient-adam": {name: [] for name, *_ in gradient_settings}, "gradfree-adam": {"0.01 scheduled": []}}
    runs = []
    for method, name, lr, sched, k in tqdm(jobs, desc="tradeoff", disable=not progress):
        reps = []
        for _ in range(repeat):
            opts = {"schedule_cap": cap} if method == "gradfree-adam" else {}
            r = _run(x, model, method, k, z_true=z_true, lr=lr, schedule=sched, **opts)
            reps.append(r)
            runs.append({"method": method, "setting": name, "steps": k, "seconds": r.seconds,
                         "trace_seconds": r.trace.seconds.tolist(), "cpu_seconds": r.cpu_seconds,
                         "trace_cpu_seconds": r.cpu_trace.tolist(), "peak_memory_bytes": r.peak_memory_bytes,
                         "status": r.status})
        read = [k] if not (method == "gradfree-adam" and k >= cap) else [p for p in prefix if p <= len(reps[0].trace)]
        for kk in read:
            pts = [_point(r, kk) for r in reps if len(r.trace) >= kk]
            if not pts:
                continue
            best = pts[0]
            best["seconds_repeats"] = [p["seconds"] for p in pts]
            best["seconds"] = _median(best["seconds_repeats"])
            best["cpu_seconds_repeats"] = [p["cpu_seconds"] for p in pts]
            best["cpu_seconds"] = _median(best["cpu_seconds_repeats"])
            best["from_run_steps"] = k
            points[method][name].append(best)

    out = {
        "setting": {"model": _model_info(model), "device": str(device), "n": n, "seed": seed, "size": size,
                    "instances": inst.how, "gradient_settings": [list(s) for s in gradient_settings],
                    "gradient_steps": list(gradient_steps), "gradfree_steps": list(gradfree_steps),
                    "gradfree_lr": gradfree_lr, "schedule_cap": cap, "repeat": repeat,
                    "threads": torch.get_num_threads(),
                    "time": "invert() wall time from its start (E(x) included) to the end of iteration K",
                    "interpolation": "linear in steps between consecutive grid points of the grad-free curve; time "
                    "interpolated linearly at the fractional step count",
                    "shared_prefix": f"grad-free K >= {cap} read from one run of "
                                     f"{max(prefix) if prefix else None} steps"},
        "device_type": device.type,
        "encoder_nmse_db": mean_ci(encoder_nmse)[0],
        "points": points,
        "runs": runs,
    }
    return summarize_tradeoff(out)


def summarize_tradeoff(out: dict) -> dict:
    """Comparisons, headline, line fits and ratio rows of a `tradeoff` result, from its ``points`` (in place)."""
    points, setting = out["points"], out["setting"]
    gradient_settings, gradient_steps = setting["gradient_settings"], setting["gradient_steps"]
    encoder_db = out["encoder_nmse_db"]
    curve = points["gradfree-adam"]["0.01 scheduled"]
    comparisons = []
    for name, *_ in gradient_settings:
        for p in points["gradient-adam"][name]:
            reach = time_to_reach(p["nmse_db"], curve)
            reach["at_first_point"] = bool(reach["reached"] and len(reach["bracket"]) == 1)
            comparisons.append({
                "encoder_reaches": bool(encoder_db <= p["nmse_db"]),
                "setting": name, "steps": p["steps"], "gradient_nmse_db": p["nmse_db"],
                "gradient_seconds": p["seconds"],
                "gradient_peak_memory_bytes": p["peak_memory_bytes"], "gradfree": reach,
                "time_ratio": _ratio(p["seconds"], reach["seconds"]) if reach["reached"] else None,
                "gradient_cpu_seconds": p["cpu_seconds"],
                "time_ratio_cpu": _ratio(p["cpu_seconds"], reach["cpu_seconds"]) if reach["reached"] else None,
                "memory_ratio": (_ratio(reach["peak_memory_bytes"], p["peak_memory_bytes"])
                                 if reach["reached"] and reach["peak_memory_bytes"] is not None else None),
            })
    kmax = max(gradient_steps)
    finals = [(name, p) for name, *_ in gradient_settings for p in points["gradient-adam"][name] if p["steps"] == kmax]
    headline = {}
    if finals and curve:
        name, best = min(finals, key=lambda t: t[1]["nmse_db"])
        exact, within = time_to_reach(best["nmse_db"], curve), time_to_reach(best["nmse_db"] + 1.0, curve)
        for h in (exact, within):
            h["at_first_point"] = bool(h["reached"] and len(h["bracket"]) == 1)
        headline = {
            "encoder_nmse_db": encoder_db, "encoder_reaches_exact": bool(encoder_db <= best["nmse_db"]),
            "best_gradient_setting": f"{name}, {kmax} iterations", "best_gradient_nmse_db": best["nmse_db"],
            "best_gradient_seconds": best["seconds"], "best_gradfree_nmse_db": min(p["nmse_db"] for p in curve),
            "reaches_exact": exact["reached"], "exact": exact,
            "time_ratio_exact": _ratio(best["seconds"], exact["seconds"]) if exact["reached"] else None,
            "time_ratio_exact_cpu": _ratio(best["cpu_seconds"], exact["cpu_seconds"]) if exact["reached"] else None,
            "reaches_within_1db": within["reached"], "within_1db": within,
            "time_ratio_within_1db": _ratio(best["seconds"], within["seconds"]) if within["reached"] else None,
            "time_ratio_within_1db_cpu": (_ratio(best["cpu_seconds"], within["cpu_seconds"]) if within["reached"]
                                          else None),
            "target_time_ratio": ">= 3 (paper: up to 5x)",
        }
    # a noise-robust cross-check of the time ratios: straight-line fits seconds = a + b * steps per curve
    fits = {"gradfree-adam|0.01 scheduled": _fit_line(curve)}
    for name, *_ in gradient_settings:
        fits[f"gradient-adam|{name}"] = _fit_line(points["gradient-adam"][name])
    for c in comparisons:
        a, b = fits["gradfree-adam|0.01 scheduled"]
        ga, gb = fits[f"gradient-adam|{c['setting']}"]
        c["time_ratio_fitted"] = (_ratio(ga + gb * c["steps"], a + b * c["gradfree"]["steps"])
                                  if c["gradfree"]["reached"] else None)
    if headline:
        a, b = fits["gradfree-adam|0.01 scheduled"]
        ga, gb = fits[f"gradient-adam|{headline['best_gradient_setting'].split(',')[0]}"]
        for key in ("exact", "within_1db"):
            h = headline[key]
            headline[f"time_ratio_{key}_fitted"] = (_ratio(ga + gb * kmax, a + b * h["steps"]) if h["reached"]
                                                    else None)
    # A speed-up is only meaningful when inversion is needed at all: when the encoder alone (step 0) already reaches
    # the gradient-based NMSE, no time ratio is reported and the comparison is marked degenerate.
    for c in comparisons:
        c["degenerate"] = c["encoder_reaches"]
        if c["degenerate"]:
            c["time_ratio"] = c["time_ratio_cpu"] = c["time_ratio_fitted"] = None
    if headline:
        headline["degenerate_exact"] = headline["encoder_reaches_exact"]
        headline["degenerate_within_1db"] = bool(encoder_db <= headline["best_gradient_nmse_db"] + 1.0)
        for key in ("exact", "within_1db"):
            if headline[f"degenerate_{key}"]:
                for suffix in ("", "_cpu", "_fitted"):
                    headline[f"time_ratio_{key}{suffix}"] = None
    reached = [c["time_ratio"] for c in comparisons if c["time_ratio"] is not None]
    mem = [c["memory_ratio"] for c in comparisons if c["memory_ratio"] is not None]
    out.update({
        "comparisons": comparisons,
        "headline": headline,
        "max_time_ratio": max(reached) if reached else None,
        "time_fits": {k: {"intercept_seconds": a, "seconds_per_step": b} for k, (a, b) in fits.items()},
    })
    device_type = out.get("device_type", "cpu")
    rows = []
    for c in comparisons:
        g = c["gradfree"]
        note = (f"grad {c['gradient_nmse_db']:.2f} dB in {c['gradient_seconds']:.2f} s; grad-free reaches it at "
                f"{g['steps']:.1f} steps / {g['seconds']:.2f} s, memory x{_fmt(c['memory_ratio'])}; "
                + ("at the first grid point, so the ratio is a lower bound; " if g["at_first_point"] else "")
                + ("the encoder alone (0 it.) already reaches it; " if c["encoder_reaches"] else "") +
                f"ratio from line fits {_fmt(c['time_ratio_fitted'])}, from CPU time {_fmt(c['time_ratio_cpu'])}"
                if g["reached"] else f"grad {c['gradient_nmse_db']:.2f} dB: NOT reached by grad-free "
                f"(best {g['best_nmse_db']:.2f} dB)")
        value = ("degenerate: the encoder alone reaches it" if c["degenerate"] else
                 c["time_ratio"] if c["time_ratio"] is not None else "not reached")
        rows.append(_row("tradeoff", f"time ratio vs grad {c['setting']} {c['steps']} it", value, ">= 1 is faster",
                         note))
    if headline:
        rows.append(_row("tradeoff", f"headline: time ratio to reach best grad ({headline['best_gradient_setting']})",
                         "degenerate: the encoder alone reaches it" if headline["degenerate_exact"] else
                         headline["time_ratio_exact"] if headline["reaches_exact"] else "not reached",
                         ">= 3 (paper <= 5)",
                         f"grad {headline['best_gradient_nmse_db']:.2f} dB vs best grad-free "
                         f"{headline['best_gradfree_nmse_db']:.2f} dB, encoder alone {encoder_db:.2f} dB; line fits "
                         f"{_fmt(headline['time_ratio_exact_fitted'])}, "
                         f"CPU time {_fmt(headline['time_ratio_exact_cpu'])}"
                         + (" (reached at the first grid point: lower bounds)"
                            if headline["exact"].get("at_first_point") else "")))
        rows.append(_row("tradeoff", "headline: time ratio to come within 1 dB",
                         "degenerate: the encoder alone comes within 1 dB" if headline["degenerate_within_1db"] else
                         headline["time_ratio_within_1db"] if headline["reaches_within_1db"] else "not reached",
                         ">= 3 (paper <= 5)", f"target {headline['best_gradient_nmse_db'] + 1:.2f} dB; line fits "
                         f"{_fmt(headline['time_ratio_within_1db_fitted'])}, CPU time "
                         f"{_fmt(headline['time_ratio_within_1db_cpu'])}"
                         + (" (reached at the first grid point: lower bounds)"
                            if headline["within_1db"].get("at_first_point") else "")))
    if mem:
        rows.append(_row("tradeoff", "grad-free / grad-based peak memory (median over reached points)",
                         _median(mem), "< 1",
                         "CPU: extra peak RSS" if device_type == "cpu" else "max_memory_allocated"))
    out["ratios"] = rows
    return out


def reanalyse(doc: dict) -> dict:
    """Re-derive a results document's trade-off comparisons, headline and ratio rows from its measured points with
    this version's `summarize_tradeoff` (in place; measurements and other suites untouched), so that an analysis
    rule added later (e.g. marking comparisons the encoder already wins as degenerate) applies to committed results.
    """
    tradeoff = (doc.get("suites") or {}).get("tradeoff")
    if not tradeoff or "points" not in tradeoff:
        return doc
    summarize_tradeoff(tradeoff)
    rows, new, placed = [], tradeoff["ratios"], False
    for row in doc.get("ratios") or []:
        if row["suite"] != "tradeoff":
            rows.append(row)
        elif not placed:
            rows.extend(new)
            placed = True
    doc["ratios"] = rows if placed else rows + new
    return doc


def _fit_line(points: list[dict]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of seconds vs steps over a curve's points (nan if fewer than 2)."""
    if len({p["steps"] for p in points}) < 2:
        return math.nan, math.nan
    b, a = np.polyfit([p["steps"] for p in points], [p["seconds"] for p in points], 1)
    return float(a), float(b)


def _fit_slope(frames, values) -> float:
    f, v = np.asarray(frames, float), np.asarray(values, float)
    ok = np.isfinite(v)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(f[ok], v[ok], 1)[0])


def video(model="tiny", *, device="auto", frames=(1, 2, 4, 8, 16, 32), size: int | None = None, steps: int = 4,
          chunk_sizes=(None, 1, 4), repeat: int = 1, quick: bool = False, progress: bool = True) -> dict:
    """Peak memory and per-iteration time vs number of frames F (one camera-pan clip of F frames at size x size).

    For each F, method (gradient-free Adam, gradient-based Adam) and ``chunk_size`` (None = all frames in one
    encoder/decoder call): ``steps`` iterations; per-iteration time = (t_K - t_1) / (K - 1) from the trace clock;
    peak memory from `decinv.measure` over the whole call (CPU: extra peak RSS; CUDA: max_memory_allocated).

    * ``memory_ratio_unchunked`` = peak(gradient-free, unchunked) / peak(gradient-based, unchunked) at F = 16 (or
      the largest F run); target <= 0.2 (paper LaVie: 7.13 / 64.7 GB = 0.11, 16-bit grad-free vs 32-bit grad).
    * ``slope_mib_per_frame``: least-squares slope of peak memory vs F for every (method, chunk) in MiB/frame.
      ``gradfree_chunked_flat``: True when the chunked gradient-free slope, fitted over F >= chunk_size (below it
      one chunk holds every frame, i.e. the run is unchunked), is at most 10 % of the unchunked slope (what grows
      is then only the latents, images and Adam state, not the network's activations).
    """
    if quick:
        frames, size, steps, chunk_sizes = (1, 2, 4), 32, 3, (None, 1)
    device = decinv.models.resolve_device(device)
    model, _ = _resolve_model(model, device)
    size = size or native_size(model)
    methods = ("gradfree-adam", "gradient-adam")
    clip1 = _clip(model, min(frames), size)
    for method in methods:  # warm-up
        _run(clip1.x, model, method, 2)
    rows = []
    jobs = [(f, m, c) for f in frames for m in methods for c in chunk_sizes]
    clips = {}
    for f, method, chunk in tqdm(jobs, desc="video", disable=not progress):
        if f not in clips:
            clips.clear()
            clips[f] = _clip(model, f, size)
        clip = clips[f]
        for rep in range(repeat):
            r = _run(clip.x, model, method, steps, chunk_size=chunk, z_true=clip.z_true)
            rows.append({"frames": f, "method": method, "chunk_size": chunk, "repeat": rep,
                         "peak_memory_bytes": r.peak_memory_bytes, "per_iter_seconds": _per_iteration(r.trace.seconds),
                         "per_iter_cpu_seconds": _per_iteration(r.cpu_trace),
                         "step_seconds": np.diff(r.trace.seconds).tolist(), "seconds": r.seconds, "status": r.status,
                         "final_nmse_db": float(np.mean(r.trace.nmse_db[-1])) if len(r.trace) else None})

    out = {
        "setting": {"model": _model_info(model), "device": str(device), "frames": list(frames), "size": size,
                    "steps": steps, "chunk_sizes": list(chunk_sizes), "repeat": repeat,
                    "threads": torch.get_num_threads(), "clip": "camera_pan over 'astronaut', 4 px/frame",
                    "memory_kind": "extra peak RSS (CPU)" if device.type == "cpu" else "max_memory_allocated"},
        "runs": rows,
        "device_type": device.type,
    }
    return summarize_video(out)


def summarize_video(out: dict) -> dict:
    """Summary, memory/time ratios, flatness and ratio rows of a `video` result, from its ``runs`` (in place)."""
    rows, setting = out["runs"], out["setting"]
    frames, chunk_sizes = list(setting["frames"]), list(setting["chunk_sizes"])
    methods = ("gradfree-adam", "gradient-adam")

    def med(method, chunk, f, key):
        return _median([r[key] for r in rows if r["method"] == method and r["chunk_size"] == chunk
                        and r["frames"] == f and r[key] is not None])

    summary = {}
    for method in methods:
        for chunk in chunk_sizes:
            mem = [med(method, chunk, f, "peak_memory_bytes") for f in frames]
            summary[f"{method}|chunk={chunk}"] = {
                "frames": list(frames), "peak_memory_mib": [m / MIB for m in mem],
                "per_iter_seconds": [med(method, chunk, f, "per_iter_seconds") for f in frames],
                "per_iter_cpu_seconds": [med(method, chunk, f, "per_iter_cpu_seconds") for f in frames],
                "slope_mib_per_frame": _fit_slope(frames, [m / MIB for m in mem]),
            }
    f_ref = 16 if 16 in frames else max(frames)
    ratio = _ratio(med("gradfree-adam", None, f_ref, "peak_memory_bytes"),
                   med("gradient-adam", None, f_ref, "peak_memory_bytes"))
    chunk_ratios = {str(c): _ratio(med("gradfree-adam", c, f_ref, "peak_memory_bytes"),
                                   med("gradient-adam", c, f_ref, "peak_memory_bytes")) for c in chunk_sizes if c}
    time_ratio = _ratio(med("gradfree-adam", None, f_ref, "per_iter_seconds"),
                        med("gradient-adam", None, f_ref, "per_iter_seconds"))
    time_ratio_cpu = _ratio(med("gradfree-adam", None, f_ref, "per_iter_cpu_seconds"),
                            med("gradient-adam", None, f_ref, "per_iter_cpu_seconds"))
    slope_un = summary["gradfree-adam|chunk=None"]["slope_mib_per_frame"] if None in chunk_sizes else math.nan
    flat = {}
    for c in chunk_sizes:
        if c:
            # below F = c a chunk holds every frame (= unchunked), so the slope is fitted over F >= c only
            v = summary[f"gradfree-adam|chunk={c}"]
            fs = [f for f in frames if f >= c]
            s = _fit_slope(fs, [m for f, m in zip(frames, v["peak_memory_mib"]) if f >= c])
            v["slope_mib_per_frame_from_chunk"] = s
            flat[str(c)] = {"slope_mib_per_frame": s, "fitted_over_frames": fs,
                            "fraction_of_unchunked_slope": _ratio(s, slope_un),
                            "flat": bool(np.isfinite(s) and np.isfinite(slope_un) and s <= 0.1 * slope_un)}
    out.update({
        "summary": summary,
        "reference_frames": f_ref,
        "memory_ratio_unchunked": ratio,
        "memory_ratio_chunked": chunk_ratios,
        "per_iter_time_ratio_unchunked": time_ratio,
        "per_iter_time_ratio_unchunked_cpu": time_ratio_cpu,
        "gradfree_chunked_flat": flat,
        "paper_memory_ratio": PAPER_VIDEO_MEMORY_RATIO,
    })
    rows_out = [
        _row("video", f"grad-free / grad-based peak memory, F={f_ref}, unchunked", ratio, "<= 0.2 (paper 0.11)",
             f"{summary['gradfree-adam|chunk=None']['peak_memory_mib'][frames.index(f_ref)]:.1f} vs "
             f"{summary['gradient-adam|chunk=None']['peak_memory_mib'][frames.index(f_ref)]:.1f} MiB"
             if None in chunk_sizes else ""),
        _row("video", f"grad-free / grad-based per-iteration time, F={f_ref}, unchunked", time_ratio, "< 1",
             f"CPU time {_fmt(time_ratio_cpu, 3)}"),
    ]
    for c, v in chunk_ratios.items():
        rows_out.append(_row("video", f"grad-free / grad-based peak memory, F={f_ref}, chunk={c}", v, "< 1"))
    for c, v in flat.items():
        rows_out.append(_row("video", f"grad-free chunk={c} memory slope / unchunked slope",
                             v["fraction_of_unchunked_slope"],
                             "<= 0.1 (flat in F)", f"{v['slope_mib_per_frame']:.2f} MiB/frame over F >= {c} vs "
                             f"{slope_un:.2f} unchunked; flat={v['flat']}"))
    out["ratios"] = rows_out
    return out


def _clip(model, frames: int, size: int):
    from decinv.experiments import camera_pan

    return camera_pan(model, frames, size, size)


def dtype_suite(model="tiny", *, device="auto", batch: int = 2, size: int | None = None, steps: int = 10,
                dtypes=("fp32", "bf16", "fp16"), repeat: int = 1, quick: bool = False, progress: bool = True) -> dict:
    """Gradient-free Adam in fp32 / bf16 / fp16, and gradient-based Adam in the same dtypes (fp16 expected to fail).

    Same ``batch`` camera-pan images for all; z* and x from the fp32 model. For each (method, dtype): final mean
    NMSE (dB), status, per-iteration time ((t_K - t_1)/(K - 1) of the trace clock, median over ``repeat`` runs after
    one warm-up), peak memory. ``time_ratio_vs_fp32`` = per-iteration time in that dtype / in fp32 (same method).
    On CPU these times say nothing about GPUs: see ``cpu_half_note``. Gradient-based Adam uses torch's default
    eps = 1e-8, which rounds to 0 in fp16: its status string says where the run failed.
    """
    if quick:
        batch, size, steps = 1, 32, 3
    device = decinv.models.resolve_device(device)
    base, _ = _resolve_model(model, device, dtype=torch.float32)
    size = size or native_size(base)
    x, z_true = _images(base, batch, size)
    runs = {}
    jobs = [(m, d) for m in ("gradfree-adam", "gradient-adam") for d in dtypes]
    for method, name in tqdm(jobs, desc="dtype", disable=not progress):
        with _quiet_diffusers():
            m = base if name == "fp32" else copy.deepcopy(base).to(device, DTYPES[name])
        _run(x, m, method, 2, z_true=z_true)  # warm-up
        reps = [_run(x, m, method, steps, z_true=z_true) for _ in range(repeat)]
        r = reps[-1]
        runs[f"{method}|{name}"] = {
            "method": method, "dtype": name, "status": r.status, "failed": r.failed, "steps_run": r.steps_run,
            "final_nmse_db": float(np.mean(r.trace.nmse_db[-1])) if len(r.trace) else None,
            "per_iter_seconds": [_per_iteration(q.trace.seconds) for q in reps],
            "per_iter_median": _median([_per_iteration(q.trace.seconds) for q in reps]),
            "per_iter_cpu_median": _median([_per_iteration(q.cpu_trace) for q in reps]),
            "seconds": [q.seconds for q in reps], "peak_memory_bytes": [q.peak_memory_bytes for q in reps],
        }
        if m is not base:
            del m
    for key, r in runs.items():
        ref = runs.get(f"{r['method']}|fp32")
        r["time_ratio_vs_fp32"] = _ratio(r["per_iter_median"], ref["per_iter_median"]) if ref else None
        r["time_ratio_vs_fp32_cpu"] = _ratio(r["per_iter_cpu_median"], ref["per_iter_cpu_median"]) if ref else None
    cpu = device.type == "cpu"
    out = {
        "setting": {"model": _model_info(base), "device": str(device), "batch": batch, "size": size, "steps": steps,
                    "dtypes": list(dtypes), "repeat": repeat, "threads": torch.get_num_threads(),
                    "cpu_layout": "channels_last for 16-bit on CPU (LatentModel's choice)" if cpu else None},
        "cpu_half_timings_not_gpu_claims": cpu,
        "cpu_half_note": CPU_HALF_NOTE if cpu else None,
        "runs": runs,
    }
    rows = []
    for name in dtypes:
        if name == "fp32":
            continue
        r = runs.get(f"gradfree-adam|{name}")
        if r:
            rows.append(_row("dtype", f"grad-free {name} / fp32 per-iteration time", r["time_ratio_vs_fp32"],
                             "GPU: < 1" + (" (CPU: not a GPU claim)" if cpu else ""),
                             f"NMSE {r['final_nmse_db']:.2f} vs fp32 "
                             f"{runs['gradfree-adam|fp32']['final_nmse_db']:.2f} dB"
                             if "gradfree-adam|fp32" in runs and r["final_nmse_db"] is not None else r["status"]))
    for name in dtypes:
        r = runs.get(f"gradient-adam|{name}")
        if r and name != "fp32":
            rows.append(_row("dtype", f"grad-based {name}", "FAILED" if r["failed"] else "ran",
                             "fp16 fails (paper)", r["status"]))
    out["ratios"] = rows
    return out


SUITES = {"overhead": overhead, "tradeoff": tradeoff, "video": video, "dtype": dtype_suite}
# Suites in their own modules, imported when run (they import helpers from this module).
def video3d(model="tiny", **kwargs) -> dict:
    """See `decinv.bench_video3d.video3d`."""
    from decinv.bench_video3d import video3d as suite

    return suite(model, **kwargs)


def acceleration(model="tiny", **kwargs) -> dict:
    """See `decinv.bench_acceleration.acceleration`."""
    from decinv.bench_acceleration import acceleration as suite

    return suite(model, **kwargs)


SUITES.update(video3d=video3d, acceleration=acceleration)
SUITE_NAMES += ("video3d", "acceleration")


# ---------------------------------------------------------------------------------------------------------------
# running, saving, printing


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None  # strict JSON: NaN/inf -> null
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    return obj


def run_suites(suites, model="tiny", *, device="auto", threads: int | None = 2, repeat: int | None = None,
               quick: bool = False, progress: bool = True, out: str | Path | None = None, **overrides) -> dict:
    """Run the named suites and return (and optionally write to ``out``) the JSON document.

    ``repeat`` overrides every suite's default number of repeats; ``overrides`` maps a suite name to extra keyword
    arguments for it (e.g. ``tradeoff={"n": 16}``).
    """
    if threads:
        torch.set_num_threads(threads)
    device = decinv.models.resolve_device(device)
    names = list(SUITE_NAMES) if suites in ("all", ["all"]) else ([suites] if isinstance(suites, str) else list(suites))
    unknown = set(names) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown suite(s) {sorted(unknown)}; choose from {', '.join(SUITE_NAMES)} or all.")
    doc = {"schema": SCHEMA, "environment": environment(device), "quick": quick, "suites": {}, "suite_seconds": {},
           "suite_cpu_seconds": {}}
    doc["environment"]["threads_requested"] = threads
    start, cpu_start = time.perf_counter(), time.process_time()
    for name in names:
        kwargs = dict(overrides.get(name, {}))
        if repeat is not None:
            kwargs["repeat"] = repeat
        t0, c0 = time.perf_counter(), time.process_time()
        doc["suites"][name] = SUITES[name](model, device=device, quick=quick, progress=progress, **kwargs)
        doc["suite_seconds"][name] = time.perf_counter() - t0
        doc["suite_cpu_seconds"][name] = time.process_time() - c0  # all threads of this process
    doc["total_seconds"] = time.perf_counter() - start
    doc["total_cpu_seconds"] = time.process_time() - cpu_start
    doc["environment"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc["ratios"] = [row for name in names for row in doc["suites"][name]["ratios"]]
    doc = _jsonable(doc)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def format_table(doc: dict) -> str:
    """The short ratio table printed at the end of a run."""
    env = doc["environment"]
    head = (f"decinv bench on {env['device_name']} ({env['device_type']}, {env['torch_threads']} torch threads, "
            f"load avg at start {env['loadavg_start'][0] if env.get('loadavg_start') else 'n/a'}), "
            f"torch {env['torch']}, "
            f"commit {(env['git_commit'] or 'n/a')[:10]}{' (dirty)' if env.get('git_dirty') else ''}, {env['date']}"
            f"{', QUICK settings' if doc.get('quick') else ''}; {doc['total_seconds']:.0f} s wall, "
            f"{doc.get('total_cpu_seconds', float('nan')):.0f} s CPU")
    lines = [head]
    load, cpus = (env.get("loadavg_start") or [0])[0], env.get("cpu_count") or 1
    if env["device_type"] == "cpu" and load > cpus:
        lines.append(f"WARNING: the machine was busy (1-min load {load:.1f} on {cpus} CPUs): CPU timings are noisy; "
                     "the CPU-time ratios (valid with 1 torch thread), '*_min' and line-fit numbers are the less "
                     "disturbed estimates.")
    if env["device_type"] == "cpu" and "dtype" in doc["suites"]:
        lines.append("NOTE: " + CPU_HALF_NOTE)
    width = max([len(r["ratio"]) for r in doc["ratios"]] + [10])
    lines.append(f"{'suite':9s} {'ratio':{width}s} {'value':>12s}  {'target':22s} note")
    for r in doc["ratios"]:
        v = r["value"]
        v = f"{v:.3f}" if isinstance(v, (int, float)) else ("nan" if v is None else str(v))
        lines.append(f"{r['suite']:9s} {r['ratio']:{width}s} {v:>12s}  {str(r['target']):22s} {r['note']}")
    return "\n".join(lines)


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--suite", choices=[*SUITE_NAMES, "all"], default="all", help="which suite (default: all)")
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (bundled v1, default), 'tiny-v2' or any decinv.load_model source")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch intra-op threads (default 2; 0 = leave as is). On a machine "
                        "shared with other busy processes use 1: more threads than free cores make every parallel "
                        "region wait for a descheduled thread (measured: 2-100x slower)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per measurement (default: per suite)")
    parser.add_argument("--n", type=int, default=None, help="tradeoff: number of instances (default 32)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and step counts (tests, smoke runs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default results/<device>-<suite>.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_cli)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``decinv bench`` on the package CLI's subparsers."""
    return _configure(subparsers.add_parser("bench", help="run the benchmark suites, write JSON, print ratios",
                                            description=__doc__.split("\n\n")[0]))


def run_cli(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = decinv.models.resolve_device(args.device)
    kind = "cpu" if device.type == "cpu" else "gpu"
    out = args.out or Path("results") / f"{kind}-{args.suite}{'-quick' if args.quick else ''}.json"
    overrides = {"tradeoff": {"n": args.n}} if args.n else {}
    doc = run_suites(args.suite, args.model, device=device, threads=args.threads or None, repeat=args.repeat,
                     quick=args.quick, progress=not args.quiet, out=out, **overrides)
    print(f"wrote {out}")
    print(format_table(doc))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _configure(argparse.ArgumentParser(prog="python -m decinv.bench", description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
