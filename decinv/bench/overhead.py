"""Benchmark suite ``overhead``: what gradient-free and gradient-based inversion cost per iteration, side by side
(the solver's own bookkeeping separated from the autoencoder's passes).

Run through `decinv.bench` (``decinv bench --suite overhead``); its helpers come from
`decinv.bench.common`."""

from __future__ import annotations

import numpy as np
import torch

import decinv
from decinv.bench.common import (
    NullModel,
    finite_median,
    fmt,
    invert_clocked,
    model_info,
    native_size,
    pan_images,
    per_iteration,
    ratio_row,
    resolve_model,
    safe_ratio,
    timed,
)
from decinv.core.progress import progress_bar


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
    * ``*_cpu``: the same ratios with process CPU time instead of wall time (see `invert_clocked`; a robust stand-in for
      idle-machine wall time with one torch thread on a CPU; meaningless on CUDA).
    * ``bookkeeping``: per-iteration time of both solvers on a network-free `NullModel` of the same shapes,
      i.e. the solver's own overhead per step (Adam, clones, norms, finiteness check, NMSE trace), in seconds and
      as a fraction of the bare pass.
    """
    if quick:
        batch, size, steps, repeat, inner = 2, 32, 4, 2, 2
    device = decinv.core.models.resolve_device(device)
    model, _ = resolve_model(model, device)
    size = size or native_size(model)
    x, z_true = pan_images(model, batch, size)
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
    invert_clocked(x, model, "gradfree-adam", 2), invert_clocked(x, model, "gradient-adam", 2)
    raw = {k: [] for k in ("bare_ED_seconds", "bare_Dfb_seconds", "gradfree_per_iter", "gradient_per_iter",
                           "gradfree_step_seconds", "gradient_step_seconds", "gradfree_total_seconds",
                           "gradient_total_seconds", "bare_ED_cpu_seconds", "bare_Dfb_cpu_seconds",
                           "gradfree_per_iter_cpu", "gradient_per_iter_cpu")}
    for _ in progress_bar(range(repeat), desc="overhead", enabled=progress):
        for bare, key, method, short in ((bare_ed, "bare_ED", "gradfree-adam", "gradfree"),
                                         (bare_dfb, "bare_Dfb", "gradient-adam", "gradient")):
            for wall, cpu in (timed(bare, device) for _ in range(inner)):
                raw[f"{key}_seconds"].append(wall)
                raw[f"{key}_cpu_seconds"].append(cpu)
            r = invert_clocked(x, model, method, steps)
            raw[f"{short}_per_iter"].append(per_iteration(r.trace.seconds))
            raw[f"{short}_per_iter_cpu"].append(per_iteration(r.cpu_trace))
            raw[f"{short}_step_seconds"].append(np.diff(r.trace.seconds).tolist())
            raw[f"{short}_total_seconds"].append(r.seconds)

    # the solvers' own per-step cost, network removed (with and without NMSE tracing)
    null = NullModel(model)
    book = {}
    null_steps = 50 if not quick else 5
    for method in ("gradfree-adam", "gradient-adam"):
        for traced in (False, True):
            kw = {"z_true": z_true} if traced else {}
            invert_clocked(x, null, method, 3, **kw)
            runs = [invert_clocked(x, null, method, null_steps, **kw) for _ in range(3)]
            per = [per_iteration(r.trace.seconds) for r in runs]
            cpu = [per_iteration(r.cpu_trace) for r in runs]
            book[f"{method}{'+nmse' if traced else ''}"] = {
                "per_iter_seconds": per, "median": finite_median(per),
                "per_iter_cpu_seconds": cpu, "median_cpu": finite_median(cpu)}

    ed, dfb = finite_median(raw["bare_ED_seconds"]), finite_median(raw["bare_Dfb_seconds"])
    gf, gb = finite_median(raw["gradfree_per_iter"]), finite_median(raw["gradient_per_iter"])
    out = {
        "setting": {"model": model_info(model), "device": str(device), "batch": batch, "size": size,
                    "steps": steps, "repeat": repeat, "inner": inner, "threads": torch.get_num_threads(),
                    "per_iteration_estimator": "(trace.seconds[K-1] - trace.seconds[0]) / (K - 1): differences of "
                    "the run's cumulative clock, excluding the initial E(x) and iteration 1; median over runs",
                    "bare_estimator": "median over repeat*inner synchronised calls"},
        "raw": raw,
        "median_seconds": {"bare_ED": ed, "bare_Dfb": dfb, "gradfree_per_iter": gf, "gradient_per_iter": gb},
        "bookkeeping_per_iter_seconds": book,
        "gradfree_per_iter_over_bare_ED": safe_ratio(gf, ed),
        "gradient_per_iter_over_bare_Dfb": safe_ratio(gb, dfb),
        "gradient_over_gradfree_per_iter": safe_ratio(gb, gf),
        "bare_Dfb_over_bare_ED": safe_ratio(dfb, ed),
        "gradfree_per_iter_over_bare_ED_min": safe_ratio(min(raw["gradfree_per_iter"]), min(raw["bare_ED_seconds"])),
        "gradient_per_iter_over_bare_Dfb_min": safe_ratio(min(raw["gradient_per_iter"]), min(raw["bare_Dfb_seconds"])),
        "gradfree_per_iter_over_bare_ED_cpu": safe_ratio(finite_median(raw["gradfree_per_iter_cpu"]),
                                                         finite_median(raw["bare_ED_cpu_seconds"])),
        "gradient_per_iter_over_bare_Dfb_cpu": safe_ratio(finite_median(raw["gradient_per_iter_cpu"]),
                                                          finite_median(raw["bare_Dfb_cpu_seconds"])),
        "gradient_over_gradfree_per_iter_cpu": safe_ratio(finite_median(raw["gradient_per_iter_cpu"]),
                                                          finite_median(raw["gradfree_per_iter_cpu"])),
    }
    out["bookkeeping_fraction"] = {
        "gradfree-adam": safe_ratio(book["gradfree-adam+nmse"]["median"], ed),
        "gradient-adam": safe_ratio(book["gradient-adam+nmse"]["median"], dfb),
    }
    out["ratios"] = [
        ratio_row("overhead", "grad-free per-iteration / bare E(D(z))", out["gradfree_per_iter_over_bare_ED"],
                  "<= 1.05",
                  f"median; fastest-vs-fastest {out['gradfree_per_iter_over_bare_ED_min']:.3f}; "
                  f"CPU-time {fmt(out['gradfree_per_iter_over_bare_ED_cpu'], 3)}"),
        ratio_row("overhead", "grad-based per-iteration / bare D fwd+bwd", out["gradient_per_iter_over_bare_Dfb"], "~1",
                  f"median; fastest-vs-fastest {out['gradient_per_iter_over_bare_Dfb_min']:.3f}; "
                  f"CPU-time {fmt(out['gradient_per_iter_over_bare_Dfb_cpu'], 3)}"),
        ratio_row("overhead", "grad-based / grad-free per-iteration time", out["gradient_over_gradfree_per_iter"],
                  "paper SD2.1 1.8",
                  f"B={batch}, {size}x{size}; CPU-time {fmt(out['gradient_over_gradfree_per_iter_cpu'], 3)}"),
        ratio_row("overhead", "solver bookkeeping / bare pass (grad-free)",
                  out["bookkeeping_fraction"]["gradfree-adam"],
                  "small", f"{book['gradfree-adam+nmse']['median'] * 1e3:.2f} ms/step on a network-free model "
                  f"({book['gradfree-adam+nmse']['median_cpu'] * 1e3:.2f} ms CPU)"),
        ratio_row("overhead", "solver bookkeeping / bare pass (grad-based)",
                  out["bookkeeping_fraction"]["gradient-adam"],
                  "small", f"{book['gradient-adam+nmse']['median'] * 1e3:.2f} ms/step on a network-free model "
                  f"({book['gradient-adam+nmse']['median_cpu'] * 1e3:.2f} ms CPU)"),
    ]
    return out
