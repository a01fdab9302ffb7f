"""Grids of inversion runs as tidy data, keyed by (method, bits, lr, schedule, iterations).

The paper's Fig. 3 / Table S1 evaluate each setting (method, bits, learning rate, schedule) after K iterations, for
several K. `sweep` runs one setting at every K of a list through a `decinv.analysis.lab.Lab`, with the fewest runs that give
exactly the numbers of one run per K:

* a **fixed** learning rate does not depend on the horizon, so K iterations are the first K of the longest run:
  one run, read off at every K;
* the gradient-based **warm-up + cosine** schedule stretches over the whole run (`warmup_cosine_schedule(K)`):
  one run per K;
* gradient-free Adam's **paper schedule** stretches over the horizon min(K, cap) (`paper_schedule(K, cap)`; the
  official code caps it at 100): runs with the same horizon share their schedule, so a 200-iteration run is the
  100-iteration run followed by 100 iterations at its last rate, and K = 100 is read off it.

Rows hold the setting's fields, never a display string; `label` and `lr_text` derive display text from them, so a
changed learning rate relabels every table and figure built on the frame.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd

from decinv.analysis.lab import Lab, Setting
from decinv.core.metrics import mean_ci
from decinv.core.solvers.gradfree_adam import gradfree_adam
from decinv.core.solvers.schedule import paper_schedule

DEFAULT_CAP = inspect.signature(gradfree_adam).parameters["schedule_cap"].default  # the solver's (100)
KEYS = ["method", "bits", "lr", "schedule", "schedule_cap", "n", "iterations"]  # what identifies a grid point
SHORT = {"gradfree-adam": "Grad-free", "gradient-adam": "Grad-based"}


def horizon(steps: int, schedule: str | None, cap: int | None = None) -> int | None:
    """The length the learning-rate schedule of a ``steps``-iteration run stretches over; None for a fixed lr.
    ``cap``: the paper schedule's cap (None: the solver's default, 100; 0: no cap)."""
    if schedule is None:
        return None
    if schedule == "paper":
        cap = DEFAULT_CAP if cap is None else cap
        return min(steps, cap) if cap else steps
    return steps


def same_prefix(short: int, long: int, cap: int | None = None) -> bool:
    """Whether the paper schedule of a ``long`` run starts with the whole schedule of a ``short`` run (so the
    ``short`` run is the first ``short`` iterations of the ``long`` one)."""
    cap = DEFAULT_CAP if cap is None else cap
    a, b = paper_schedule(short, cap), paper_schedule(long, cap)
    return all(math.isclose(a(i), b(i)) for i in range(short))


def runs_for(iterations, schedule: str | None, cap: int | None = None) -> dict[int, list[int]]:
    """{run length: [iteration counts read off that run]} for one setting: the fewest runs that give the numbers
    of one run per count. Counts that share a schedule horizon are read off the longest of them."""
    ks = sorted(set(int(k) for k in iterations))
    if not ks or ks[0] < 1:
        raise ValueError(f"iteration counts must be >= 1, got {list(iterations)!r}")
    groups: dict[int, list[int]] = {}
    for k in ks:
        h = horizon(k, schedule, cap)
        longest = max(j for j in ks if horizon(j, schedule, cap) == h)
        groups.setdefault(longest, []).append(k)
    return groups


def sweep(lab: Lab, method: str, iterations, *, bits: int = 32, lr: float | None = None,
          schedule: str | None = None, schedule_cap: int | None = None, n: int | None = None) -> pd.DataFrame:
    """One setting after every K in ``iterations``, as tidy rows: one per (K, image).

    Columns: the setting's fields (method, bits, lr, schedule, schedule_cap, n), ``iterations`` K, ``image``,
    ``nmse_db`` NMSE(z_K, z*) of that image, ``seconds_per_image`` the run's wall time to the end of iteration K
    divided by the batch size, ``run_steps`` the length of the run K was read off, ``read_off`` (K < run_steps),
    ``status`` the run's status. Runs go through ``lab.run`` (cached by setting; 16-bit on a copy of the model)."""
    rows = []
    for length, ks in runs_for(iterations, schedule, schedule_cap).items():
        setting = Setting(method, length, bits=bits, lr=lr, schedule=schedule, n=n, schedule_cap=schedule_cap)
        run = lab.run(setting)
        batch = run.nmse_db.shape[1]
        for k in ks:
            if k > run.steps_run:  # a run that stopped early (non-finite values): no K-th iterate
                continue
            for i in range(batch):
                rows.append({"method": method, "bits": bits, "lr": lr, "schedule": schedule,
                             "schedule_cap": schedule_cap, "n": n, "iterations": k, "image": i,
                             "nmse_db": float(run.nmse_db[k, i]), "seconds_per_image": float(run.seconds[k - 1]) / batch,
                             "run_steps": length, "read_off": k != length, "status": run.status})
    return pd.DataFrame(rows)


def lr_text(lr: float, schedule: str | None) -> str:
    """The learning rate as the paper's tables write it: "0.01 scheduled" or "0.01 fixed"."""
    return f"{lr:g} {'scheduled' if schedule else 'fixed'}"


def label(method: str, bits: int, lr: float, schedule: str | None) -> str:
    """A short display label derived from the keys, e.g. "Grad-free 32-bit, 0.01 sched."."""
    return f"{SHORT.get(method, method)} {bits}-bit, {lr:g} {'sched.' if schedule else 'fixed'}"


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point (the `KEYS`), in the order of ``frame``: ``setting`` (a `label`), ``lr_text``,
    ``nmse_mean`` and ``nmse_ci`` (mean NMSE over the images and its 95 % t-interval half-width), ``n_images``,
    ``seconds_per_image``, ``read_off`` and ``status``."""
    out = []
    for key, sub in frame.groupby(KEYS, sort=False, dropna=False):
        point = dict(zip(KEYS, key))
        point = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in point.items()}
        mean, half = mean_ci(sub["nmse_db"].to_numpy())
        out.append({"setting": label(point["method"], point["bits"], point["lr"], point["schedule"]), **point,
                    "lr_text": lr_text(point["lr"], point["schedule"]), "nmse_mean": mean, "nmse_ci": half,
                    "n_images": len(sub), "seconds_per_image": float(sub["seconds_per_image"].iloc[0]),
                    "read_off": bool(sub["read_off"].iloc[0]), "status": sub["status"].iloc[0]})
    return pd.DataFrame(out)


def per_image(frame: pd.DataFrame, iterations: int, **keys) -> np.ndarray:
    """The per-image NMSE (dB) of the rows with ``iterations`` and the given key values, in image order."""
    sel = frame["iterations"] == iterations
    for k, v in keys.items():
        sel &= frame[k].isna() if v is None else frame[k] == v
    return frame[sel].sort_values("image")["nmse_db"].to_numpy()
