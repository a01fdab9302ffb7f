"""Benchmark suite ``tradeoff``: the NMSE-vs-time Pareto comparison of gradient-free and gradient-based inversion
(paper Fig. 3 / Table S1 protocol), its analysis (`summarize_tradeoff`) and the re-analysis of committed results
(`reanalyse`).

Run through `decinv.bench` (``decinv bench --suite tradeoff``); its helpers come from
`decinv.bench.common`."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

import decinv
from decinv.bench.common import (
    finite_median,
    fmt,
    instances,
    invert_clocked,
    model_info,
    native_size,
    ratio_row,
    resolve_model,
    safe_ratio,
)
from decinv.core.metrics import mean_ci
from decinv.core.progress import progress_bar


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
    with process CPU time (robust on a shared CPU with one thread, see `invert_clocked`); ``time_ratio_fitted``: the
    same with each curve's times replaced by a straight-line fit of time vs steps; ``memory_ratio`` =
    gradient-free peak memory / gradient-based peak memory (< 1: smaller). ``headline``: does gradient-free reach
    the best NMSE of the gradient-based runs with the most iterations (the paper's 100), or come within 1 dB,
    and at what time ratio (target >= 3; the paper reports up to 5x).
    """
    if quick:
        n, size, gradient_steps, gradfree_steps, schedule_cap = 2, 32, (3, 6), (2, 4, 6, 8), 6
    device = decinv.core.models.resolve_device(device)
    model, pipeline = resolve_model(model, device, need_pipeline=True)
    size = size or native_size(model)
    inst = instances(model, pipeline, n, seed, size)
    x, z_true = inst.x, inst.z_true
    encoder_nmse = decinv.nmse_db(model.encode(x, check=False), z_true).cpu().numpy()
    cap = schedule_cap
    separate = sorted(k for k in gradfree_steps if k < cap)
    prefix = sorted(k for k in gradfree_steps if k >= cap)

    # warm-up (discarded)
    invert_clocked(x, model, "gradfree-adam", 2, z_true=z_true)
    invert_clocked(x, model, "gradient-adam", 2, z_true=z_true)

    grad_jobs = [("gradient-adam", name, lr, sched, k) for name, lr, sched in gradient_settings for k in gradient_steps]
    free_jobs = [("gradfree-adam", "0.01 scheduled", gradfree_lr, "paper", k) for k in separate]
    if prefix:
        free_jobs.append(("gradfree-adam", "0.01 scheduled", gradfree_lr, "paper", max(prefix)))
    # alternate the two methods, so that slow drifts in machine load hit both curves alike
    jobs = [j for pair in itertools.zip_longest(grad_jobs, free_jobs) for j in pair if j is not None]
    points = {"gradient-adam": {name: [] for name, *_ in gradient_settings}, "gradfree-adam": {"0.01 scheduled": []}}
    runs = []
    for method, name, lr, sched, k in progress_bar(jobs, desc="tradeoff", enabled=progress):
        reps = []
        for _ in range(repeat):
            opts = {"schedule_cap": cap} if method == "gradfree-adam" else {}
            r = invert_clocked(x, model, method, k, z_true=z_true, lr=lr, schedule=sched, **opts)
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
            best["seconds"] = finite_median(best["seconds_repeats"])
            best["cpu_seconds_repeats"] = [p["cpu_seconds"] for p in pts]
            best["cpu_seconds"] = finite_median(best["cpu_seconds_repeats"])
            best["from_run_steps"] = k
            points[method][name].append(best)

    out = {
        "setting": {"model": model_info(model), "device": str(device), "n": n, "seed": seed, "size": size,
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
                "time_ratio": safe_ratio(p["seconds"], reach["seconds"]) if reach["reached"] else None,
                "gradient_cpu_seconds": p["cpu_seconds"],
                "time_ratio_cpu": safe_ratio(p["cpu_seconds"], reach["cpu_seconds"]) if reach["reached"] else None,
                "memory_ratio": (safe_ratio(reach["peak_memory_bytes"], p["peak_memory_bytes"])
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
            "time_ratio_exact": safe_ratio(best["seconds"], exact["seconds"]) if exact["reached"] else None,
            "time_ratio_exact_cpu": safe_ratio(best["cpu_seconds"], exact["cpu_seconds"]) if exact["reached"] else None,
            "reaches_within_1db": within["reached"], "within_1db": within,
            "time_ratio_within_1db": safe_ratio(best["seconds"], within["seconds"]) if within["reached"] else None,
            "time_ratio_within_1db_cpu": (safe_ratio(best["cpu_seconds"], within["cpu_seconds"]) if within["reached"]
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
        c["time_ratio_fitted"] = (safe_ratio(ga + gb * c["steps"], a + b * c["gradfree"]["steps"])
                                  if c["gradfree"]["reached"] else None)
    if headline:
        a, b = fits["gradfree-adam|0.01 scheduled"]
        ga, gb = fits[f"gradient-adam|{headline['best_gradient_setting'].split(',')[0]}"]
        for key in ("exact", "within_1db"):
            h = headline[key]
            headline[f"time_ratio_{key}_fitted"] = (safe_ratio(ga + gb * kmax, a + b * h["steps"]) if h["reached"]
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
                f"{g['steps']:.1f} steps / {g['seconds']:.2f} s, memory x{fmt(c['memory_ratio'])}; "
                + ("at the first grid point, so the ratio is a lower bound; " if g["at_first_point"] else "")
                + ("the encoder alone (0 it.) already reaches it; " if c["encoder_reaches"] else "") +
                f"ratio from line fits {fmt(c['time_ratio_fitted'])}, from CPU time {fmt(c['time_ratio_cpu'])}"
                if g["reached"] else f"grad {c['gradient_nmse_db']:.2f} dB: NOT reached by grad-free "
                f"(best {g['best_nmse_db']:.2f} dB)")
        value = ("degenerate: the encoder alone reaches it" if c["degenerate"] else
                 c["time_ratio"] if c["time_ratio"] is not None else "not reached")
        rows.append(ratio_row("tradeoff", f"time ratio vs grad {c['setting']} {c['steps']} it", value, ">= 1 is faster",
                              note))
    if headline:
        rows.append(ratio_row("tradeoff",
                              f"headline: time ratio to reach best grad ({headline['best_gradient_setting']})",
                              "degenerate: the encoder alone reaches it" if headline["degenerate_exact"] else
                              headline["time_ratio_exact"] if headline["reaches_exact"] else "not reached",
                              ">= 3 (paper <= 5)",
                              f"grad {headline['best_gradient_nmse_db']:.2f} dB vs best grad-free "
                              f"{headline['best_gradfree_nmse_db']:.2f} dB, encoder alone {encoder_db:.2f} dB; "
                              "line fits "
                              f"{fmt(headline['time_ratio_exact_fitted'])}, "
                              f"CPU time {fmt(headline['time_ratio_exact_cpu'])}"
                              + (" (reached at the first grid point: lower bounds)"
                                 if headline["exact"].get("at_first_point") else "")))
        rows.append(ratio_row("tradeoff", "headline: time ratio to come within 1 dB",
                              "degenerate: the encoder alone comes within 1 dB"
                              if headline["degenerate_within_1db"] else
                              headline["time_ratio_within_1db"] if headline["reaches_within_1db"] else "not reached",
                              ">= 3 (paper <= 5)", f"target {headline['best_gradient_nmse_db'] + 1:.2f} dB; line fits "
                              f"{fmt(headline['time_ratio_within_1db_fitted'])}, CPU time "
                              f"{fmt(headline['time_ratio_within_1db_cpu'])}"
                              + (" (reached at the first grid point: lower bounds)"
                                 if headline["within_1db"].get("at_first_point") else "")))
    if mem:
        rows.append(ratio_row("tradeoff", "grad-free / grad-based peak memory (median over reached points)",
                              finite_median(mem), "< 1",
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
