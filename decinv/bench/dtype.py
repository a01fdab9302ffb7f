"""Benchmark suite ``dtype``: 32-bit vs 16-bit inversion (time, memory, error) on the same instances.

Run through `decinv.bench` (``decinv bench --suite dtype``); its helpers come from
`decinv.bench.common`."""

from __future__ import annotations

import copy

import numpy as np
import torch

import decinv
from decinv.bench.common import (
    CPU_HALF_NOTE,
    DTYPES,
    finite_median,
    invert_clocked,
    model_info,
    native_size,
    pan_images,
    per_iteration,
    quiet_diffusers,
    ratio_row,
    resolve_model,
    safe_ratio,
)
from decinv.core.progress import progress_bar


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
    device = decinv.core.models.resolve_device(device)
    base, _ = resolve_model(model, device, dtype=torch.float32)
    size = size or native_size(base)
    x, z_true = pan_images(base, batch, size)
    runs = {}
    jobs = [(m, d) for m in ("gradfree-adam", "gradient-adam") for d in dtypes]
    for method, name in progress_bar(jobs, desc="dtype", enabled=progress):
        with quiet_diffusers():
            m = base if name == "fp32" else copy.deepcopy(base).to(device, DTYPES[name])
        invert_clocked(x, m, method, 2, z_true=z_true)  # warm-up
        reps = [invert_clocked(x, m, method, steps, z_true=z_true) for _ in range(repeat)]
        r = reps[-1]
        runs[f"{method}|{name}"] = {
            "method": method, "dtype": name, "status": r.status, "failed": r.failed, "steps_run": r.steps_run,
            "final_nmse_db": float(np.mean(r.trace.nmse_db[-1])) if len(r.trace) else None,
            "per_iter_seconds": [per_iteration(q.trace.seconds) for q in reps],
            "per_iter_median": finite_median([per_iteration(q.trace.seconds) for q in reps]),
            "per_iter_cpu_median": finite_median([per_iteration(q.cpu_trace) for q in reps]),
            "seconds": [q.seconds for q in reps], "peak_memory_bytes": [q.peak_memory_bytes for q in reps],
        }
        if m is not base:
            del m
    for key, r in runs.items():
        ref = runs.get(f"{r['method']}|fp32")
        r["time_ratio_vs_fp32"] = safe_ratio(r["per_iter_median"], ref["per_iter_median"]) if ref else None
        r["time_ratio_vs_fp32_cpu"] = safe_ratio(r["per_iter_cpu_median"], ref["per_iter_cpu_median"]) if ref else None
    cpu = device.type == "cpu"
    out = {
        "setting": {"model": model_info(base), "device": str(device), "batch": batch, "size": size, "steps": steps,
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
            rows.append(ratio_row("dtype", f"grad-free {name} / fp32 per-iteration time", r["time_ratio_vs_fp32"],
                                  "GPU: < 1" + (" (CPU: not a GPU claim)" if cpu else ""),
                                  f"NMSE {r['final_nmse_db']:.2f} vs fp32 "
                                  f"{runs['gradfree-adam|fp32']['final_nmse_db']:.2f} dB"
                                  if "gradfree-adam|fp32" in runs and r["final_nmse_db"] is not None else r["status"]))
    for name in dtypes:
        r = runs.get(f"gradient-adam|{name}")
        if r and name != "fp32":
            rows.append(ratio_row("dtype", f"grad-based {name}", "FAILED" if r["failed"] else "ran",
                                  "fp16 fails (paper)", r["status"]))
    out["ratios"] = rows
    return out
