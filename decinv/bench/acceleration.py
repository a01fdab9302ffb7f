"""Benchmark suite ``acceleration``: E+D calls (and time, memory) each gradient-free method needs, side by side.

    decinv bench --suite acceleration --threads 2 --out results/cpu-acceleration.json

Every gradient-free iteration costs one decoder and one encoder pass, so the number of E+D calls is the method's
cost, on any hardware. On the same instances (``n`` DDIM samples z* of the bundled LDM, x = 8-bit D(z*), as in the
`tradeoff` suite) this suite runs, for ``steps`` iterations each: the paper's gradient-free Adam (lr 0.01, its
schedule), the forward step at the paper's rho = 0.001 and at Anderson's rho, inertial KM (alpha 0.9, rho 0.001)
and Anderson acceleration with memory m in ``memories``. It reads off each trace:

- (a) calls until the mean NMSE reaches gradient-free Adam's NMSE after ``steps`` iterations (the issue's target),
  and (a') Adam's best NMSE over the run; a target the encoder already meets is marked *degenerate* (no ratio);
- (b) calls until the mean over instances of ||T(p)|| / ||T(E(x))||, at the best evaluated point p so far, falls
  to 1/10;
- the best mean NMSE and the call where it is reached, and NMSE after 10/20/50/100 calls;
- wall time to each target (linear in calls between trace points), and peak memory of the whole call.

Ratios: calls of gradient-free Adam / calls of the method (> 1: fewer E+D calls than the paper's method). A second,
smaller pass repeats Adam, the forward step and Anderson (m = 5) in float16 (networks in fp16, every method's state
in fp32).
"""

from __future__ import annotations

import numpy as np
import torch

import decinv
from decinv.bench.common import MIB, instances, invert_clocked, model_info, native_size, ratio_row, resolve_model
from decinv.core.progress import progress_bar
from decinv.paper import GRADFREE_ADAM, SEC34

PAPER_ADAM = dict(GRADFREE_ADAM)  # Sec. 4 / App. A.2.1


def methods(memories=(3, 5, 10), rho: float = 0.5) -> dict:
    """Label -> (method, options): the paper's three gradient-free methods at its settings, the forward step at
    Anderson's rho (the un-accelerated base of Anderson), and Anderson with each memory."""
    out = {
        "gradfree-adam (paper)": ("gradfree-adam", dict(PAPER_ADAM)),
        f"forward-step rho={SEC34['step_size']:g} (paper)": ("forward-step", {"step_size": SEC34["step_size"]}),
        f"forward-step rho={rho:g}": ("forward-step", {"step_size": rho}),
        "inertial-km (paper)": ("inertial-km", {"alpha": SEC34["alpha"], "step_size": SEC34["step_size"]}),
    }
    out.update({f"anderson m={m}": ("anderson", {"memory": m, "step_size": rho}) for m in memories})
    return out


def calls_to(values: np.ndarray, target: float) -> float | None:
    """First 1-based call count k with ``values[k-1] <= target``, linearly interpolated between calls; None if never.
    ``values``: one number per call (e.g. the mean NMSE after each call)."""
    for i, v in enumerate(values):
        if v <= target:
            if i == 0:
                return 1.0
            a = values[i - 1]
            return i + (target - a) / (v - a)
    return None


def _time_at(seconds: np.ndarray, calls: float | None) -> float | None:
    if calls is None:
        return None
    return float(np.interp(calls, np.arange(1, len(seconds) + 1), seconds))


def curves(result) -> dict:
    """Per-call curves of one `decinv.invert` result (means over instances): NMSE in dB, ||T|| at the best evaluated
    point so far relative to ||T(E(x))||, and the trace clock."""
    nmse = result.trace.nmse_db.mean(1)
    res = result.trace.residual
    relative = (np.minimum.accumulate(res, axis=0) / res[0]).mean(1)  # best evaluated point so far, per instance
    return {"nmse_db": nmse.tolist(), "relative_residual": relative.tolist(),
            "seconds": result.trace.seconds.tolist()}


def _one_pass(x, z_true, model, labels: dict, steps: int, progress: bool, desc: str, repeat: int = 1) -> dict:
    runs = {}
    for label, (method, opts) in progress_bar(labels.items(), desc=desc, enabled=progress):
        reps = [invert_clocked(x, model, method, steps, z_true=z_true, **opts) for _ in range(repeat)]
        r = reps[0]  # the iterates are deterministic; only the clocks differ between repeats
        r.trace.seconds = np.median([q.trace.seconds for q in reps], axis=0)
        runs[label] = {"method": method, "options": opts, "status": r.status, "seconds": r.seconds,
                       "cpu_seconds": r.cpu_seconds, "peak_memory_bytes": r.peak_memory_bytes,
                       "memory_kind": r.memory_kind, "info": {k: v for k, v in r.info.items()
                                                              if k in ("memory", "state_bytes", "state_dtype")},
                       "rejected_steps_total": int(sum(r.info.get("rejected_steps", []))), **curves(r)}
    return runs


def _summarize_pass(runs: dict, encoder_nmse: float, steps: int) -> dict:
    adam = runs["gradfree-adam (paper)"]
    targets = {"adam_final": adam["nmse_db"][-1], "adam_best": min(adam["nmse_db"])}
    table = {}
    for label, run in runs.items():
        nmse, rel, sec = np.asarray(run["nmse_db"]), np.asarray(run["relative_residual"]), np.asarray(run["seconds"])
        row = {"best_nmse_db": float(nmse.min()), "best_at_call": int(nmse.argmin()) + 1,
               "nmse_db_at": {k: float(nmse[k - 1]) for k in (10, 20, 50, 100) if k <= len(nmse)},
               "peak_mib": None if run["peak_memory_bytes"] is None else run["peak_memory_bytes"] / MIB,
               "status": run["status"], "rejected_steps_total": run["rejected_steps_total"]}
        for name, target in targets.items():
            k = calls_to(nmse, target)
            row[f"calls_to_{name}"], row[f"seconds_to_{name}"] = k, _time_at(sec, k)
        k = calls_to(rel, 0.1)
        row["calls_to_residual_tenth"], row["seconds_to_residual_tenth"] = k, _time_at(sec, k)
        table[label] = row
    degenerate = {name: bool(encoder_nmse <= target) for name, target in targets.items()}
    for label, row in table.items():
        for name in (*targets, "residual_tenth"):
            a, b = table["gradfree-adam (paper)"][f"calls_to_{name}"], row[f"calls_to_{name}"]
            row[f"call_ratio_{name}"] = (None if degenerate.get(name) or a is None or b is None else a / b)
    return {"targets_nmse_db": targets, "encoder_nmse_db": encoder_nmse, "degenerate": degenerate, "table": table}


def acceleration(model="tiny", *, device="auto", n: int = 32, seed: int = 0, size: int | None = None,
                 steps: int = 100, memories=(3, 5, 10), rho: float = 0.5, fp16_n: int = 8, fp16_steps: int = 50,
                 repeat: int = 1, quick: bool = False, progress: bool = True) -> dict:
    """E+D calls to reach each target, per method, in float32 (and a smaller float16 pass); see the module
    docstring. ``fp16_n`` = 0 skips the float16 pass. ``repeat``: runs per method; call counts are exact, the
    clocks are the element-wise median over repeats."""
    if quick:
        n, steps, memories, fp16_n, fp16_steps, size = 2, 6, (2,), 2, 4, 32
    device = decinv.core.models.resolve_device(device)
    model32, pipeline = resolve_model(model, device, need_pipeline=True)
    size = size or native_size(model32)
    inst = instances(model32, pipeline, n, seed, size)
    x, z_true = inst.x, inst.z_true
    labels = methods(memories, rho)
    encoder_nmse = float(decinv.nmse_db(model32.encode(x, check=False), z_true).mean())
    invert_clocked(x[:1], model32, "anderson", 2)  # warm-up (discarded)
    out = {"setting": {"model": model_info(model32), "device": str(device), "n": n, "seed": seed, "size": size,
                       "instances": inst.how, "steps": steps, "memories": list(memories), "rho": rho,
                       "threads": torch.get_num_threads(), "repeat": repeat, "fp16_n": fp16_n, "fp16_steps": fp16_steps,
                       "calls": "one E+D call per iteration for every method here; the initial E(x) is not counted",
                       "residual": "||T(p)|| / ||T(E(x))|| at the best evaluated point p so far, mean over instances"},
           "device_type": device.type}
    runs = _one_pass(x, z_true, model32, labels, steps, progress, "acceleration fp32", repeat)
    out["float32"] = {"runs": runs, **_summarize_pass(runs, encoder_nmse, steps)}
    if fp16_n:
        model16, _ = resolve_model(model, device, dtype=torch.float16)
        x16, z16 = x[:fp16_n].half(), z_true[:fp16_n]
        enc16 = float(decinv.nmse_db(model16.encode(x16, check=False).float(), z16.float()).mean())
        keep = ("gradfree-adam (paper)", f"forward-step rho={rho:g}", f"anderson m={5 if 5 in memories else memories[0]}")
        runs16 = _one_pass(x16, z16, model16, {k: labels[k] for k in keep}, fp16_steps, progress, "acceleration fp16",
                           repeat)
        out["float16"] = {"runs": runs16, **_summarize_pass(runs16, enc16, fp16_steps)}
    return summarize_acceleration(out)


def summarize_acceleration(out: dict) -> dict:
    """The ratio rows (Adam's calls / Anderson's calls per target), from the per-pass tables (in place)."""
    rows = []
    names = {"adam_final": "Adam's final NMSE", "adam_best": "Adam's best NMSE", "residual_tenth": "||T|| / 10"}
    for dtype in ("float32", "float16"):
        if dtype not in out:
            continue
        p = out[dtype]
        for label, row in p["table"].items():
            if not label.startswith("anderson"):
                continue
            for key, what in names.items():
                ratio = row[f"call_ratio_{key}"]
                if p["degenerate"].get(key):
                    note = f"degenerate: the encoder ({p['encoder_nmse_db']:.2f} dB) already reaches it"
                elif ratio is None:
                    reached = [s for s, r in (("Adam", p["table"]["gradfree-adam (paper)"]), (label, row))
                               if r[f"calls_to_{key}"] is None]
                    note = f"not reached by {' and '.join(reached)} in the run"
                else:
                    note = f"{row[f'calls_to_{key}']:.1f} vs {p['table']['gradfree-adam (paper)'][f'calls_to_{key}']:.1f} calls"
                rows.append(ratio_row("accel", f"{dtype} Adam/{label} calls to {what}", ratio, "> 1", note))
    out["ratios"] = rows
    return out


def acceleration_frame(out: dict, dtype: str = "float32"):
    """One pass of an `acceleration` result as a pandas DataFrame, one row per method: E+D calls to each target
    (NaN: not reached in the run) and the wall time to the residual target (the whole batch, from the start of the
    call), Adam's calls / the method's calls, best NMSE and where, peak memory."""
    import pandas as pd

    p = out[dtype]
    rows = []
    for label, r in p["table"].items():
        rows.append({"method": label,
                     "calls to Adam's final NMSE": r["calls_to_adam_final"],
                     "calls to Adam's best NMSE": r["calls_to_adam_best"],
                     "calls to ||T||/10": r["calls_to_residual_tenth"],
                     "seconds to ||T||/10": r["seconds_to_residual_tenth"],
                     "Adam/method (||T||/10)": r["call_ratio_residual_tenth"],
                     "best NMSE (dB)": r["best_nmse_db"], "at call": r["best_at_call"],
                     f"NMSE after {len(out[dtype]['runs'][label]['nmse_db'])} (dB)":
                         out[dtype]["runs"][label]["nmse_db"][-1],
                     "peak memory (MiB)": r["peak_mib"], "rejected candidates": r["rejected_steps_total"]})
    return pd.DataFrame(rows).set_index("method").astype(float, errors="ignore")


__all__ = ["acceleration", "acceleration_frame", "calls_to", "curves", "methods", "summarize_acceleration"]
