"""Benchmark suites: how much faster, smaller and more precision-flexible gradient-free inversion really is.

    python -m decinv.bench --suite overhead|tradeoff|video|dtype|video3d|acceleration|jobs|all [--model tiny]
                           [--device auto] [--threads 2] [--repeat N] [--quick] --out results/<name>.json
    decinv bench ...            (the same, through the package's command line)

This module holds what the suites share (environment record, timing helpers, instances), the runner and the command
line; each suite lives in its own module, ``decinv/bench_<suite>.py``, and is registered here by name.

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
* `jobs` (not in ``all``): images/s of the dataset job (``decinv invert``) against the one-at-a-time loop it
  replaced, and its peak memory against the number of images; each configuration is a process of its own.
"""

from __future__ import annotations

import argparse
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

import decinv
from decinv.measure import synchronize

SCHEMA = "decinv-bench/1"
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


def _clip(model, frames: int, size: int):
    from decinv.experiments import camera_pan

    return camera_pan(model, frames, size, size)


def _suite(module: str, name: str):
    """The suite ``name`` of ``decinv.<module>``, imported when it is first run: the suite modules import the
    helpers above from this module, so importing them here at load time would be circular."""

    def run(model="tiny", **kwargs) -> dict:
        import importlib

        return getattr(importlib.import_module(f"decinv.{module}"), name)(model, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"See `decinv.{module}.{name}`."
    return run


# One module per suite. The names stay importable from here (decinv.bench.overhead, ...).
overhead = _suite("bench_overhead", "overhead")
tradeoff = _suite("bench_tradeoff", "tradeoff")
video = _suite("bench_video", "video")
dtype_suite = _suite("bench_dtype", "dtype_suite")
video3d = _suite("bench_video3d", "video3d")
acceleration = _suite("bench_acceleration", "acceleration")
jobs = _suite("bench_jobs", "jobs")
SUITES = {"overhead": overhead, "tradeoff": tradeoff, "video": video, "dtype": dtype_suite, "video3d": video3d,
          "acceleration": acceleration, "jobs": jobs}
SUITE_NAMES = tuple(SUITES)
# Not in "all": the jobs suite starts CPU processes of its own and takes minutes (run it with --suite jobs).
OPT_IN = ("jobs",)


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
    names = ([n for n in SUITE_NAMES if n not in OPT_IN] if suites in ("all", ["all"])
             else [suites] if isinstance(suites, str) else list(suites))
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
    parser.add_argument("--suite", choices=[*SUITE_NAMES, "all"], default="all",
                        help=f"which suite (default: all = every suite but {', '.join(OPT_IN)})")
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (bundled v2, default), 'tiny-v1' or any decinv.load_model source")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch intra-op threads (default 2; 0 = leave as is). On a machine "
                        "shared with other busy processes use 1: more threads than free cores make every parallel "
                        "region wait for a descheduled thread (measured: 2-100x slower)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per measurement (default: per suite)")
    parser.add_argument("--n", type=int, default=None,
                        help="tradeoff: number of instances (default 32); jobs: number of images (default 64)")
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
    overrides = {"tradeoff": {"n": args.n}, "jobs": {"n": args.n}} if args.n else {}
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
