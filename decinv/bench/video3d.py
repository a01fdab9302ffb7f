"""Benchmark suite ``video3d``: gradient-free vs gradient-based inversion of a 3-D causal video autoencoder.

    decinv bench --suite video3d --threads 1 --out results/cpu-video3d.json

The paper's motivating case (Fig. 3b, LaVie: 64.7 GB for gradient-based vs 7.13 GB for gradient-free inversion) is a
video model, where the decoder turns a whole clip into frames at once and backpropagating through it keeps every
frame's activations. The `video` suite measures this with a 2-D autoencoder applied frame by frame; this suite uses a
*temporal* autoencoder (diffusers' ``AutoencoderKLWan``, Wan 2.1's architecture, small and randomly initialised, so
no weights are downloaded): F = 4k + 1 frames are encoded causally into k + 1 latent frames, and a video cannot be
split into independent chunks (its decoder carries a feature cache across latent frames).

For each F and method (gradient-free Adam, the paper's method; gradient-based Adam through autograd), ``steps``
iterations from E(x) on a random clip; per-iteration time = (t_K − t_1) / (K − 1) of the trace clock (wall) and of the
process CPU clock; peak memory from `decinv.core.measure` over the whole call (CPU: extra peak RSS, model weights excluded;
CUDA: max_memory_allocated). Ratios, gradient-free / gradient-based, at every F side by side.

Each run is one `decinv.invert` call (a temporal autoencoder's batch item is a whole video), with a callback that
reads the process CPU clock after every iteration.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

import decinv
from decinv.bench.common import (
    MIB,
    PAPER_VIDEO_MEMORY_RATIO,
    finite_median,
    fmt,
    model_info,
    per_iteration,
    ratio_row,
    safe_ratio,
)
from decinv.core.progress import progress_bar

METHODS_COMPARED = ("gradfree-adam", "gradient-adam")
# Wan 2.1's layout (x8 in space, x4 in time, 16 latent channels, temporal downsampling in the last two stages) at
# a small width: base_dim 8 instead of 96, one residual block per stage instead of 2.
SMALL_WAN = {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1,
             "temperal_downsample": [False, True, True], "latents_mean": [0.0] * 16, "latents_std": [1.0] * 16}


def small_video_autoencoder(config: dict | None = None, seed: int = 0, device="cpu"):
    """A randomly initialised ``AutoencoderKLWan`` (default: `SMALL_WAN`) as a `decinv.LatentModel`."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return decinv.load_model(AutoencoderKLWan(**(SMALL_WAN if config is None else config)), device=device)


def invert_videos(x: torch.Tensor, model, method: str, steps: int, **options):
    """`decinv.invert` of videos ``x`` (B, F, 3, H, W) with a temporal ``model`` (one latent video per item), with
    the process CPU clock read after every iteration: (result, CPU seconds per iteration since the start)."""
    cpu, start = [], time.process_time()
    result = decinv.invert(x, model, method, steps, progress=False,
                           callback=lambda info: cpu.append(time.process_time() - start), **options)
    return result, np.asarray(cpu, dtype=float)


def video3d(model="tiny", *, device="auto", frames=(1, 9, 17, 33, 65), size: int = 64, steps: int = 5,
            repeat: int = 1, config: dict | None = None, quick: bool = False, progress: bool = True) -> dict:
    """Peak memory and per-iteration time vs F for a temporal autoencoder (see the module docstring).

    ``model``: a temporal `decinv.LatentModel` or load_model source; anything else (the CLI's default "tiny" is a 2-D
    autoencoder) is replaced by a random ``AutoencoderKLWan`` with ``config`` (default `SMALL_WAN`), recorded in
    the result's setting. Ratios: ``memory_ratio[F]`` and ``per_iter_time_ratio[F]`` = gradient-free / gradient-based.
    """
    if quick:
        frames, size, steps = (1, 5), 16, 3
    device = decinv.core.models.resolve_device(device)
    source = "argument"
    try:
        loaded = decinv.load_model(model, device=device) if model is not None else None
    except (ValueError, OSError, RuntimeError):
        loaded = None
    if loaded is None or not loaded.temporal:
        loaded, source = small_video_autoencoder(config, device=device), "random AutoencoderKLWan"
    model = loaded
    g = torch.Generator().manual_seed(0)
    warm = torch.rand(1, 1, 3, size, size, generator=g) * 2 - 1
    for method in METHODS_COMPARED:  # warm-up (one-off allocations, kernel selection)
        invert_videos(warm, model, method, 2)
    rows = []
    jobs = [(f, method, rep) for f in frames for method in METHODS_COMPARED for rep in range(repeat)]
    for f, method, rep in progress_bar(jobs, desc="video3d", enabled=progress):
        x = torch.rand(1, f, 3, size, size, generator=torch.Generator().manual_seed(f)) * 2 - 1
        m, cpu = invert_videos(x, model, method, steps)  # an InversionResult: z finite, status true
        trace = m.trace
        rows.append({"frames": f, "latent_frames": model.latent_frames(f), "method": method, "repeat": rep,
                     "peak_memory_bytes": m.peak_memory_bytes, "seconds": m.seconds,
                     "per_iter_seconds": per_iteration(trace.seconds), "per_iter_cpu_seconds": per_iteration(cpu),
                     "status": m.status,
                     "final_residual": float(np.mean(trace.residual[-1])) if len(trace) else None})
    out = {
        "setting": {"model": {**model_info(model), "class": type(model.vae).__name__, "source": source,
                              "config": {k: v for k, v in dict(model.vae.config).items() if not k.startswith("_")},
                              "spatial": model.downsample, "temporal": model.temporal_compression},
                    "device": str(device), "frames": list(frames), "size": size, "steps": steps, "repeat": repeat,
                    "threads": torch.get_num_threads(), "clip": "uniform random pixels in [-1, 1], seed F",
                    "memory_kind": m.memory_kind},
        "runs": rows,
        "device_type": device.type,
    }
    return summarize_video3d(out)


def summarize_video3d(out: dict) -> dict:
    """Per-F medians and the gradient-free / gradient-based ratios, side by side (in place)."""
    rows, frames = out["runs"], out["setting"]["frames"]

    def med(method, f, key):
        return finite_median([r[key] for r in rows
                              if r["method"] == method and r["frames"] == f and r[key] is not None])

    table = []
    for f in frames:
        free_mem, grad_mem = med("gradfree-adam", f, "peak_memory_bytes"), med("gradient-adam", f, "peak_memory_bytes")
        free_t, grad_t = med("gradfree-adam", f, "per_iter_seconds"), med("gradient-adam", f, "per_iter_seconds")
        free_c, grad_c = med("gradfree-adam", f, "per_iter_cpu_seconds"), med("gradient-adam", f, "per_iter_cpu_seconds")
        table.append({"frames": f, "latent_frames": next(r["latent_frames"] for r in rows if r["frames"] == f),
                      "gradfree_peak_mib": free_mem / MIB, "gradient_peak_mib": grad_mem / MIB,
                      "memory_ratio": safe_ratio(free_mem, grad_mem),
                      "gradfree_per_iter_s": free_t, "gradient_per_iter_s": grad_t,
                      "per_iter_time_ratio": safe_ratio(free_t, grad_t),
                      "per_iter_cpu_time_ratio": safe_ratio(free_c, grad_c)})
    failed = sorted({f"{r['method']} F={r['frames']}" for r in rows if str(r["status"]).startswith("failed")})
    out.update({"table": table, "paper_memory_ratio": PAPER_VIDEO_MEMORY_RATIO, "failed_runs": failed})
    out["ratios"] = [
        ratio_row("video3d", f"grad-free / grad-based peak memory, F={t['frames']} ({t['latent_frames']} latent)",
                  t["memory_ratio"], "< 1 (paper 0.11)",
                  f"{fmt(t['gradfree_peak_mib'], 1)} vs {fmt(t['gradient_peak_mib'], 1)} MiB; per-iteration time ratio "
                  f"{fmt(t['per_iter_time_ratio'], 3)} ({fmt(t['gradfree_per_iter_s'], 3)} vs "
                  f"{fmt(t['gradient_per_iter_s'], 3)} s), CPU time {fmt(t['per_iter_cpu_time_ratio'], 3)}")
        for t in table]
    if failed:
        out["ratios"].append(ratio_row("video3d", "runs that failed (non-finite)", math.nan, "none", ", ".join(failed)))
    return out
