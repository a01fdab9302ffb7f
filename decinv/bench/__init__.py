"""Benchmark suites: how much faster, smaller and more precision-flexible gradient-free inversion really is.

    python -m decinv.bench --suite overhead|tradeoff|video|dtype|video3d|acceleration|jobs|all [--model tiny]
                           [--device auto] [--threads 2] [--repeat N] [--quick] --out results/<name>.json
    decinv bench ...            (the same, through the package's command line)

The package is in three layers, each importing only the ones below it: `decinv.bench.common` holds what the suites
share (environment record, clocks, ratio rows, models and instances); each suite lives in a module of its own
(`decinv.bench.overhead`, `decinv.bench.tradeoff`, `decinv.bench.video`, `decinv.bench.dtype`,
`decinv.bench.video3d`, `decinv.bench.acceleration`, `decinv.bench.jobs`); this module registers them by name
(`SUITES`) and holds the runner (`run_suites`, `format_table`) and the command line.

Every suite is a function returning a JSON-ready dict with all raw timings (every repeat), and a list of
``ratios`` (name, value, target, meaning). The JSON file also records the device (CPU model from /proc/cpuinfo or
GPU name), torch threads, library versions, git commit, date and the load average, and the command prints a ratio
table last. Timing protocol: warm-up runs first (discarded), then ``repeat`` repeats; medians are reported; on CUDA
every clock reading follows ``torch.cuda.synchronize``; torch's intra-op thread count is fixed (``--threads``)
and stored. Times come from `decinv.invert`'s own clocks (``InversionResult.seconds`` and ``trace.seconds``,
synchronised on CUDA), peak memory from `decinv.core.measure` (CUDA: absolute ``max_memory_allocated``; CPU: the *extra*
peak RSS of the call, model weights excluded -- not the same quantity as the paper's GPU numbers).

Suites (see each function's docstring for the exact definition of each ratio):

* `overhead`: is one iteration of a solver as cheap as the network passes it needs? (bare-pass ratios ~ 1)
* `tradeoff`: NMSE vs time for gradient-based Adam (lr 0.1, warm-up + cosine) and gradient-free Adam (lr 0.01,
  the paper's schedule) on generated instances; the time gradient-free needs to reach each gradient-based NMSE.
* `video`: peak memory and per-iteration time vs number of frames, with and without chunking.
* `dtype`: fp32 / bf16 / fp16 gradient-free Adam, and whether fp16 gradient-based Adam fails.
* `jobs` (not in ``all``): images/s of the dataset job (``decinv invert``) against the one-at-a-time loop it
  replaced, and its peak memory against the number of images; each configuration is a process of its own.
* `video3d`, `acceleration`: see `decinv.bench.video3d` and `decinv.bench.acceleration`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import decinv
from decinv.bench import acceleration, dtype, jobs, overhead, tradeoff, video, video3d
from decinv.bench.common import (
    CPU_HALF_NOTE,
    DTYPES,
    MIB,
    PAPER_VIDEO_MEMORY_RATIO,
    SCHEMA,
    environment,
    git_info,
    jsonable,
    native_size,
)

# The suites by name: each a function (model="tiny", *, device, quick, progress, repeat, ...) -> JSON-ready dict.
SUITES = {"overhead": overhead.overhead, "tradeoff": tradeoff.tradeoff, "video": video.video,
          "dtype": dtype.dtype_suite, "video3d": video3d.video3d, "acceleration": acceleration.acceleration,
          "jobs": jobs.jobs}
SUITE_NAMES = tuple(SUITES)
# Not in "all": the jobs suite starts CPU processes of its own and takes minutes (run it with --suite jobs).
OPT_IN = ("jobs",)

__all__ = ["CPU_HALF_NOTE", "DTYPES", "MIB", "OPT_IN", "PAPER_VIDEO_MEMORY_RATIO", "SCHEMA", "SUITES", "SUITE_NAMES",
           "add_parser", "environment", "format_table", "git_info", "jsonable", "main", "native_size", "run_cli",
           "run_suites"]


# ---------------------------------------------------------------------------------------------------------------
# running, saving, printing


def run_suites(suites, model="tiny", *, device="auto", threads: int | None = 2, repeat: int | None = None,
               quick: bool = False, progress: bool = True, out: str | Path | None = None, **overrides) -> dict:
    """Run the named suites and return (and optionally write to ``out``) the JSON document.

    ``repeat`` overrides every suite's default number of repeats; ``overrides`` maps a suite name to extra keyword
    arguments for it (e.g. ``tradeoff={"n": 16}``).
    """
    if threads:
        torch.set_num_threads(threads)
    device = decinv.core.models.resolve_device(device)
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
    doc = jsonable(doc)
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
    device = decinv.core.models.resolve_device(args.device)
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

