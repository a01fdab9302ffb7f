"""Benchmark suite ``jobs``: images per second of the dataset job (`decinv.applications.jobs`, ``decinv invert``) against the
one-image-at-a-time loop that ``decinv invert`` ran before the job replaced it, and the job's peak memory against the
number of images.

    decinv bench --suite jobs --out results/cpu-jobs.json     # 64 images of 128x128, tiny model, 100 steps, 2 threads

Every configuration runs as a process of its own, started and timed by this one, so that each pays its own imports
and model loading and its peak memory is its own. All invert the same ``n`` 8-bit PNG images (frames of a camera pan
over a picture, decoded by the model: `decinv.generation.experiments.camera_pan`) with gradient-free Adam (the paper's
defaults) for ``steps`` iterations, with ``threads`` torch threads in all:

* ``loop``: the previous command (`one_at_a_time`, as in commit ff5ff05): per image, E(x) for the encoder baseline,
  the inversion, then the residual and PSNR of both, printed; one file written at the end.
* ``job-b1``: the job with batches of 1: what the job costs without batching (its checks are 2 D + 3 E per batch).
* ``job``: the job with batches of ``batch``.
* ``torchrun``: the job under ``torchrun --standalone --nproc_per_node ranks``, ``threads / ranks`` threads per rank.

The images are cut into ``rounds`` parts and the configurations take turns on each part (`jobs`), so that the load
other processes put on a shared machine touches them alike. Measured per configuration and round: the process's
wall time from start to exit (**end to end**), the wall time of its
inversion phase (**phase**: after the model is loaded; the job's own ``seconds`` from summary.json, the loop's own
clock around its loop), CPU time (user + system of the process and the children it waited for, ``os.wait4``), and
peak resident memory (``ru_maxrss`` from ``os.wait4``: the largest single process, absolute, so it includes Python,
torch and the model). Environment: ``OMP_WAIT_POLICY=PASSIVE`` (as the Makefile; spinning OpenMP threads stall each
other on a shared machine), ``HF_HUB_OFFLINE=1``.

Memory runs (short: ``memory_steps`` iterations, since the peak is reached in the first one): the job with batches
of ``batch`` at each of ``memory_counts`` images, and with batches of ``batch / 4``.

Ratios: images per second of ``job``, ``job-b1`` and ``torchrun`` over ``loop``, end to end and phase only (target
for ``job``: >= 3, from the issue); peak RSS of the job at the largest / smallest image count (bounded by the batch:
about 1).

Why: `ed_per_image` times one E(D(z)) per image (wall and process CPU time) at batch 1 and at ``batch``, with 1
and with ``threads`` threads, in a process with the same environment (``ed_ms_per_image`` in the result): where
batching does not lower the one-thread cost, the job gains only from how the threads share a batch and from the
loop's extra passes it drops.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import decinv
from decinv.bench.common import MIB, model_info, native_size, ratio_row, resolve_model, safe_ratio
from decinv.generation.experiments import camera_pan
from decinv.core.images import load_image
from decinv.applications.jobs import collect_inputs
from decinv.core.solvers.tracking import norms

TARGET = 3.0
# How this suite starts its own workers (`worker_main`): ``python -c`` rather than ``python -m decinv.bench.jobs``,
# which would run this module a second time beside the copy the package's __init__ has already imported.
WORKER = [sys.executable, "-c",
          "import sys; from decinv.bench.jobs import worker_main; sys.exit(worker_main(sys.argv[1:]))"]


def one_at_a_time(paths, model, method: str = "gradfree-adam", steps: int = 100, options: dict | None = None,
                  size: int | None = None, out: str | Path | None = None, print_fn=print) -> dict:
    """The loop ``decinv invert`` ran before the dataset job (commit ff5ff05's ``cmd_invert``), kept as the baseline
    of this suite: for each image in turn, load it, run the encoder baseline and the inversion (batch of 1), print
    the residual ||E(D(z)) - E(x)|| and the PSNR of D(z) for both (4 more decoder and 2 more encoder passes), keep
    the latent; write all latents to one safetensors file ``out`` at the end. Returns {name: latent (C, h, w)}.
    (The old command read files through the loader that is now `decinv.core.images.load_image`; a refused file ended it.)"""
    options = dict(options or {})
    latents, names = {}, set()
    for path in paths:
        x = load_image(path, size, model.downsample)
        encoder = decinv.invert(x, model, "encoder", progress=False)
        result = decinv.invert(x, model, method, steps, progress=False, **options)
        T = decinv.operator(model, x)  # T(z) = E(D(z)) - E(x)
        residual = lambda z: float(norms(T(z))[0])
        psnr = lambda z: float(decinv.psnr(model.decode(z).float(), x)[0])
        print_fn(f"{path} ({x.shape[-1]}x{x.shape[-2]}): residual ||E(D(z))-E(x)|| encoder {residual(encoder.z):.4g} "
                 f"-> {residual(result.z):.4g}; PSNR of D(z) vs input encoder {psnr(encoder.z):.2f} dB -> "
                 f"{psnr(result.z):.2f} dB; {result.seconds:.2f} s, {result.status}")
        name = Path(path).stem
        while name in names:
            name += "_"
        names.add(name)
        latents[name] = result.z[0].float().cpu().contiguous()
    if out:
        save_file(latents, str(out), metadata={"method": method, "steps": str(steps)})
    return latents


def _write_images(model, n: int, size: int, folder: Path) -> list[str]:
    """``n`` 8-bit PNGs of ``size``² in ``folder``: the frames of a camera pan, decoded by ``model``."""
    folder.mkdir(parents=True, exist_ok=True)
    x = camera_pan(model, n, size, size, step=2).x[0]
    paths = []
    for i, image in enumerate(x):
        rgb = ((image.float().permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        paths.append(str(folder / f"frame{i:03d}.png"))
        Image.fromarray(rgb).save(paths[-1])
    return paths


def _spawn(cmd: list[str], threads: int, log: Path) -> dict:
    """Run ``cmd`` to its end: {"wall_seconds", "cpu_seconds", "max_rss_mib", "loadavg_start"}; raises on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    with open(log, "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {log.read_text()[-2000:]}")
    return {"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_mib": usage.ru_maxrss * 1024 / MIB, "loadavg_start": load}


def _job_cmd(folder: Path, out: Path, model: str, steps: int, batch: int, threads: int, ranks: int = 1) -> list[str]:
    head = [sys.executable, "-m", "decinv"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), "-m", "decinv"]
    return head + ["invert", str(folder), "--model", model, "--device", "cpu", "--steps", str(steps), "-b",
                   str(batch), "--threads", str(threads), "--out", str(out), "--quiet"]


def _run_job_config(name, folder, work, model, steps, batch, threads, ranks=1) -> dict:
    out = work / name
    measured = _spawn(_job_cmd(folder, out, model, steps, batch, max(1, threads // ranks), ranks), threads,
                      work / f"{name}.log")
    summary = json.loads((out / "summary.json").read_text())
    if summary["ok"] != summary["inputs"]:
        raise RuntimeError(f"{name}: only {summary['ok']} of {summary['inputs']} images were inverted; see {out}.")
    return {**measured, "phase_seconds": summary["seconds"], "images": summary["inputs"], "batch": batch,
            "ranks": ranks, "threads_per_process": max(1, threads // ranks)}


def _run_loop_config(folder, work, model, steps, threads, name="loop") -> dict:
    timing = work / f"{name}.json"
    measured = _spawn([*WORKER, "loop", str(folder), "--model", model, "--steps",
                       str(steps), "--threads", str(threads), "--out", str(work / f"{name}.safetensors"),
                       "--timing", str(timing)], threads, work / f"{name}.log")
    phase = json.loads(timing.read_text())
    return {**measured, "phase_seconds": phase["phase_seconds"], "images": phase["images"], "batch": 1, "ranks": 1,
            "threads_per_process": threads}


def jobs(model="tiny", *, device="cpu", quick: bool = False, progress: bool = True, n: int | None = None,
         size: int | None = None, steps: int | None = None, batch: int | None = None, ranks: int | None = None,
         rounds: int | None = None, memory_counts=None, memory_steps: int = 2, repeat: int = 1) -> dict:
    """The suite (see the module docstring). ``model``: a `decinv.load_model` source *string* (each configuration
    loads it itself); ``n`` images (default 64; quick 4) of ``size``² (default: the model's native size), ``steps``
    (100; quick 2), ``batch`` (16; quick 2), ``ranks`` for torchrun (2; quick 0 = not run), ``memory_counts`` (16
    and 64 images; quick none); quick runs no ``job-b1`` and no `ed_per_image` either. Threads: the calling
    process's torch thread count (``decinv bench --threads``). CPU only: ``device`` must be the CPU.

    Interleaving: the ``n`` images are cut into ``rounds`` parts (default 2; quick 1) and every configuration runs
    on part 1, then every one on part 2, ... (the order reversed in every other round), so that a change in the
    load other processes put on the machine touches every configuration alike; ``repeat`` passes over all rounds.
    Totals add up the rounds; the per-round ratios are kept (``speedups[name]["end_to_end_by_round"]``) to show the
    spread."""
    if not isinstance(model, str):
        raise TypeError("the jobs suite starts each configuration as its own process, so model must be a "
                        "decinv.load_model source string (e.g. 'tiny' or a folder), not an object.")
    if torch.device(device).type != "cpu":
        raise ValueError("the jobs suite measures the CPU (the configurations are CPU processes); run it with "
                         "--device cpu.")
    n = n or (4 if quick else 64)
    steps = steps if steps is not None else (2 if quick else 100)
    batch = batch or (2 if quick else 16)
    ranks = ranks if ranks is not None else (0 if quick else 2)
    rounds = rounds or (1 if quick else 2)
    if n % rounds or (n // rounds) % batch:
        raise ValueError(f"n = {n} images must split into {rounds} round(s) of whole batches of {batch}.")
    memory_counts = list(memory_counts) if memory_counts is not None else ([] if quick else [16, 64])
    threads = torch.get_num_threads()
    lm, _ = resolve_model(model, "cpu")
    size = size or native_size(lm)
    runs: dict = {}
    with tempfile.TemporaryDirectory(prefix="decinv-bench-jobs-") as tmp:
        work = Path(tmp)
        folder = work / "images"
        _write_images(lm, max([n, *memory_counts]), size, folder)
        frames = sorted(folder.iterdir())
        parts = []
        for r in range(rounds):
            parts.append(work / f"round{r}")
            parts[-1].mkdir()
            for path in frames[r * n // rounds:(r + 1) * n // rounds]:
                (parts[-1] / path.name).symlink_to(path)
        configs = [("loop", lambda part, tag: _run_loop_config(part, work, model, steps, threads, f"loop{tag}")),
                   ("job-b1", lambda part, tag: _run_job_config(f"job-b1{tag}", part, work, model, steps, 1,
                                                               threads)),
                   ("job", lambda part, tag: _run_job_config(f"job{tag}", part, work, model, steps, batch, threads))]
        if quick:
            del configs[1]  # tests: the loop and the batched job only
        if ranks and ranks > 1:
            configs.append(("torchrun", lambda part, tag: _run_job_config(f"torchrun{tag}", part, work, model, steps,
                                                                        batch, threads, ranks)))
        for rep in range(repeat):
            for r, part in enumerate(parts):
                order = configs if (rep * rounds + r) % 2 == 0 else configs[::-1]
                for name, run in order:
                    if progress:
                        print(f"jobs suite: {name}, round {r + 1}/{rounds} ({n // rounds} images)"
                              + (f", pass {rep + 1}/{repeat}" if repeat > 1 else "") + " ...", flush=True)
                    runs.setdefault(name, []).append({**run(part, f"-{rep}-{r}"), "round": r})
        memory = []
        for count in memory_counts:
            part = work / f"mem{count}"
            part.mkdir()
            for path in sorted(folder.iterdir())[:count]:
                (part / path.name).symlink_to(path)
            for b in sorted({batch, max(1, batch // 4)}):
                if progress:
                    print(f"jobs suite: memory, {count} images, batches of {b} ...", flush=True)
                got = _run_job_config(f"mem{count}-b{b}", part, work, model, memory_steps, b, threads)
                memory.append({"images": count, "batch": b, "max_rss_mib": got["max_rss_mib"],
                               "wall_seconds": got["wall_seconds"]})
        ed_ms = None
        if not quick:
            if progress:
                print(f"jobs suite: E(D(z)) per image at batch 1 and batch {batch} ...", flush=True)
            ed_ms = _run_ed(work, model, size, sorted({1, batch}), sorted({1, threads}), 10)
    setting = dict(model=model_info(lm), n=n, size=size, steps=steps, batch=batch, ranks=ranks, threads=threads,
                   method="gradfree-adam (paper defaults)", memory_steps=memory_steps, repeat=repeat, rounds=rounds,
                   images="8-bit PNG frames of a camera pan over 'astronaut' (2 px/frame), decoded by the model",
                   environment="every process: OMP_WAIT_POLICY=PASSIVE (as the Makefile), HF_HUB_OFFLINE=1")
    return _analyse(runs, memory, setting, ed_ms)


@torch.no_grad()
def ed_per_image(model, size: int, batches=(1, 16), threads=(1, 2), repeat: int = 5) -> dict:
    """{threads: {batch: {"wall_ms", "cpu_ms"}}}: median wall and process CPU milliseconds of one E(D(z)) per image,
    on random latents of ``size``² images, in this process (one warm-up call first; batch sizes interleaved). What
    batching alone changes in the cost of the network passes; CPU time also counts what the threads spend waiting
    for each other."""
    before, table = torch.get_num_threads(), {}
    try:
        for t in threads:
            torch.set_num_threads(t)
            zs = {b: torch.randn(b, model.latent_channels, size // model.downsample, size // model.downsample,
                                 generator=torch.Generator().manual_seed(0)).to(model.device, model.dtype)
                  for b in batches}
            times = {b: [] for b in batches}
            for r in range(repeat + 1):
                for b, z in zs.items():
                    start, cpu = time.perf_counter(), time.process_time()
                    model.encode(model.decode(z, check=False), check=False, finite=False)
                    if r:  # the first round warms up
                        times[b].append((time.perf_counter() - start, time.process_time() - cpu))
            table[t] = {b: {"wall_ms": float(np.median([w for w, _ in v])) / b * 1e3,
                            "cpu_ms": float(np.median([c for _, c in v])) / b * 1e3} for b, v in times.items()}
    finally:
        torch.set_num_threads(before)
    return table


def _run_ed(work: Path, model: str, size: int, batches, threads, repeat: int) -> dict:
    """`ed_per_image` in a process of its own, with the configurations' environment (OpenMP wait policy included,
    which cannot be changed inside a process once torch has started its threads)."""
    out = work / "ed.json"
    _spawn([*WORKER, "ed", "--model", model, "--size", str(size), "--batches",
            *map(str, batches), "--threads", *map(str, threads), "--repeat", str(repeat), "--out", str(out)],
           max(threads), work / "ed.log")
    return json.loads(out.read_text())


def _analyse(runs: dict, memory: list, setting: dict, ed_ms: dict | None = None) -> dict:
    """Totals over the rounds, images/s, the ratios against the loop (overall and per round)."""
    table = {}
    for name, rows in runs.items():
        total = lambda key: float(sum(r[key] for r in rows))
        images = sum(r["images"] for r in rows)
        table[name] = {"images": images, "batch": rows[0]["batch"], "ranks": rows[0]["ranks"],
                       "threads_per_process": rows[0]["threads_per_process"],
                       "wall_seconds": total("wall_seconds"), "phase_seconds": total("phase_seconds"),
                       "cpu_seconds": total("cpu_seconds"), "cpu_seconds_per_image": total("cpu_seconds") / images,
                       "max_rss_mib": max(r["max_rss_mib"] for r in rows),
                       "loadavg_start": [r["loadavg_start"][0] if r["loadavg_start"] else None for r in rows],
                       "images_per_second": images / total("wall_seconds"),
                       "images_per_second_phase": images / total("phase_seconds")}
    loop = table.get("loop")
    ratios, speedups = [], {}
    for name in ("job", "job-b1", "torchrun"):
        if name not in table or loop is None:
            continue
        end = safe_ratio(table[name]["images_per_second"], loop["images_per_second"])
        phase = safe_ratio(table[name]["images_per_second_phase"], loop["images_per_second_phase"])
        by_round = [safe_ratio(b["images"] / b["wall_seconds"], a["images"] / a["wall_seconds"])
                    for a, b in zip(runs["loop"], runs[name])]
        speedups[name] = {"end_to_end": end, "phase": phase, "end_to_end_by_round": by_round}
        t = table[name]
        what = (f"batches of {t['batch']}" + (f", {t['ranks']} torchrun ranks x {t['threads_per_process']} thread(s)"
                                             if t["ranks"] > 1 else f", {t['threads_per_process']} thread(s)"))
        target = f">= {TARGET:g}" if name == "job" else "—"
        spread = ", ".join(f"{v:.2f}" for v in by_round)
        ratios.append(ratio_row("jobs", f"{name} / loop, images/s end to end", end, target,
                                f"{what}; {t['images']} images of {setting['size']}², {setting['steps']} steps; "
                                f"per round {spread}"))
        ratios.append(ratio_row("jobs", f"{name} / loop, images/s inversion phase", phase, target,
                                "model loading and imports excluded"))
    mem = {}
    if memory:
        top = max(m["batch"] for m in memory)
        by_count = {m["images"]: m["max_rss_mib"] for m in memory if m["batch"] == top}
        lo, hi = min(by_count), max(by_count)
        mem = {"batch": top, "rss_mib_by_images": by_count, "ratio": safe_ratio(by_count[hi], by_count[lo]),
               "by_batch": {m["batch"]: m["max_rss_mib"] for m in memory if m["images"] == hi}}
        ratios.append(ratio_row("jobs", f"job peak RSS, {hi} / {lo} images", mem["ratio"], "~1 (bounded by the batch)",
                                f"batches of {top}; {by_count[lo]:.0f} vs {by_count[hi]:.0f} MiB (absolute, "
                                "Python + torch + model)"))
    met = speedups.get("job", {}).get("end_to_end")
    return {"setting": setting, "runs": runs, "table": table, "speedups": speedups, "ed_ms_per_image": ed_ms,
            "memory": memory,
            "memory_summary": mem, "target": TARGET, "target_met": None if met is None else bool(met >= TARGET),
            "ratios": ratios}


def ed_main(argv=None) -> int:
    """Worker ``ed ...``: `ed_per_image` as its own process, written to ``--out``."""
    parser = argparse.ArgumentParser(prog="decinv.bench.jobs worker ed")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model = decinv.load_model(args.model, device="cpu")
    args.out.write_text(json.dumps(ed_per_image(model, args.size, args.batches, args.threads, args.repeat)))
    return 0


def loop_main(argv=None) -> int:
    """Worker ``loop FOLDER ...``: the `one_at_a_time` configuration as its own process."""
    parser = argparse.ArgumentParser(prog="decinv.bench.jobs worker loop")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timing", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = decinv.load_model(args.model, device="cpu")
    paths = collect_inputs([args.folder])
    start = time.perf_counter()
    one_at_a_time(paths, model, steps=args.steps, out=args.out)
    args.timing.write_text(json.dumps({"phase_seconds": time.perf_counter() - start, "images": len(paths)}))
    return 0



def worker_main(argv: list[str]) -> int:
    """The suite's worker processes (started through `WORKER`): ``loop FOLDER ...`` or ``ed --size S ...``."""
    if argv and argv[0] in ("loop", "ed"):
        return (loop_main if argv[0] == "loop" else ed_main)(argv[1:])
    raise SystemExit("usage: worker loop FOLDER --out FILE --timing FILE | ed --size S --out FILE "
                     "(workers of the suite: decinv bench --suite jobs)")
