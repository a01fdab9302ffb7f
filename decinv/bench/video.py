"""Benchmark suite ``video``: peak memory and time per iteration against the number of frames, for an image
autoencoder applied frame by frame (chunked or not).

Run through `decinv.bench` (``decinv bench --suite video``); its helpers come from
`decinv.bench.common`."""

from __future__ import annotations

import math

import numpy as np
import torch

import decinv
from decinv.bench.common import (
    MIB,
    PAPER_VIDEO_MEMORY_RATIO,
    finite_median,
    fmt,
    invert_clocked,
    model_info,
    native_size,
    pan_clip,
    per_iteration,
    ratio_row,
    resolve_model,
    safe_ratio,
)
from decinv.core.progress import progress_bar


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
    peak memory from `decinv.core.measure` over the whole call (CPU: extra peak RSS; CUDA: max_memory_allocated).

    * ``memory_ratio_unchunked`` = peak(gradient-free, unchunked) / peak(gradient-based, unchunked) at F = 16 (or
      the largest F run); target <= 0.2 (paper LaVie: 7.13 / 64.7 GB = 0.11, 16-bit grad-free vs 32-bit grad).
    * ``slope_mib_per_frame``: least-squares slope of peak memory vs F for every (method, chunk) in MiB/frame.
      ``gradfree_chunked_flat``: True when the chunked gradient-free slope, fitted over F >= chunk_size (below it
      one chunk holds every frame, i.e. the run is unchunked), is at most 10 % of the unchunked slope (what grows
      is then only the latents, images and Adam state, not the network's activations).
    """
    if quick:
        frames, size, steps, chunk_sizes = (1, 2, 4), 32, 3, (None, 1)
    device = decinv.core.models.resolve_device(device)
    model, _ = resolve_model(model, device)
    size = size or native_size(model)
    methods = ("gradfree-adam", "gradient-adam")
    clip1 = pan_clip(model, min(frames), size)
    for method in methods:  # warm-up
        invert_clocked(clip1.x, model, method, 2)
    rows = []
    jobs = [(f, m, c) for f in frames for m in methods for c in chunk_sizes]
    clips = {}
    for f, method, chunk in progress_bar(jobs, desc="video", enabled=progress):
        if f not in clips:
            clips.clear()
            clips[f] = pan_clip(model, f, size)
        clip = clips[f]
        for rep in range(repeat):
            r = invert_clocked(clip.x, model, method, steps, chunk_size=chunk, z_true=clip.z_true)
            rows.append({"frames": f, "method": method, "chunk_size": chunk, "repeat": rep,
                         "peak_memory_bytes": r.peak_memory_bytes, "per_iter_seconds": per_iteration(r.trace.seconds),
                         "per_iter_cpu_seconds": per_iteration(r.cpu_trace),
                         "step_seconds": np.diff(r.trace.seconds).tolist(), "seconds": r.seconds, "status": r.status,
                         "final_nmse_db": float(np.mean(r.trace.nmse_db[-1])) if len(r.trace) else None})

    out = {
        "setting": {"model": model_info(model), "device": str(device), "frames": list(frames), "size": size,
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
        return finite_median([r[key] for r in rows if r["method"] == method and r["chunk_size"] == chunk
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
    ratio = safe_ratio(med("gradfree-adam", None, f_ref, "peak_memory_bytes"),
                       med("gradient-adam", None, f_ref, "peak_memory_bytes"))
    chunk_ratios = {str(c): safe_ratio(med("gradfree-adam", c, f_ref, "peak_memory_bytes"),
                                       med("gradient-adam", c, f_ref, "peak_memory_bytes")) for c in chunk_sizes if c}
    time_ratio = safe_ratio(med("gradfree-adam", None, f_ref, "per_iter_seconds"),
                            med("gradient-adam", None, f_ref, "per_iter_seconds"))
    time_ratio_cpu = safe_ratio(med("gradfree-adam", None, f_ref, "per_iter_cpu_seconds"),
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
                            "fraction_of_unchunked_slope": safe_ratio(s, slope_un),
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
        ratio_row("video", f"grad-free / grad-based peak memory, F={f_ref}, unchunked", ratio, "<= 0.2 (paper 0.11)",
                  f"{summary['gradfree-adam|chunk=None']['peak_memory_mib'][frames.index(f_ref)]:.1f} vs "
                  f"{summary['gradient-adam|chunk=None']['peak_memory_mib'][frames.index(f_ref)]:.1f} MiB"
                  if None in chunk_sizes else ""),
        ratio_row("video", f"grad-free / grad-based per-iteration time, F={f_ref}, unchunked", time_ratio, "< 1",
                  f"CPU time {fmt(time_ratio_cpu, 3)}"),
    ]
    for c, v in chunk_ratios.items():
        rows_out.append(ratio_row("video", f"grad-free / grad-based peak memory, F={f_ref}, chunk={c}", v, "< 1"))
    for c, v in flat.items():
        rows_out.append(ratio_row("video", f"grad-free chunk={c} memory slope / unchunked slope",
                                  v["fraction_of_unchunked_slope"],
                                  "<= 0.1 (flat in F)", f"{v['slope_mib_per_frame']:.2f} MiB/frame over F >= {c} vs "
                                  f"{slope_un:.2f} unchunked; flat={v['flat']}"))
    out["ratios"] = rows_out
    return out
