"""The acceleration suite: E+D calls to the same targets, side by side; importable in any order (no import cycle)."""

import subprocess
import sys

import numpy as np

from decinv import bench
from decinv.bench.acceleration import acceleration, acceleration_frame, calls_to


def test_calls_to_interpolates_and_reports_never():
    assert calls_to(np.array([-10.0, -12.0, -14.0]), -13.0) == 2.5
    assert calls_to(np.array([-15.0, -16.0]), -13.0) == 1.0
    assert calls_to(np.array([-10.0, -11.0]), -13.0) is None


def test_module_imports_first_without_a_cycle():
    for first in ("decinv.bench.acceleration", "decinv.bench.video3d", "decinv.bench.overhead", "decinv.bench.tradeoff",
                  "decinv.bench.video", "decinv.bench.dtype", "decinv.bench.jobs", "decinv.bench.common", "decinv.bench",
                  "decinv.bench.acceleration", "decinv.bench.tradeoff"):
        run = subprocess.run([sys.executable, "-c", f"import {first}"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr


def test_quick_run_counts_calls_and_marks_degenerate_targets():
    out = acceleration("tiny", device="cpu", quick=True, progress=False)
    assert "acceleration" in bench.SUITES
    p = out["float32"]
    assert set(p["table"]) >= {"gradfree-adam (paper)", "anderson m=2"}
    adam = p["table"]["gradfree-adam (paper)"]
    assert adam["calls_to_adam_best"] == p["table"]["gradfree-adam (paper)"]["best_at_call"]  # reached at its best
    for row in out["ratios"]:
        assert (row["value"] is None) == ("degenerate" in row["note"] or "not reached" in row["note"])
    if p["degenerate"]["adam_final"]:
        assert all(r["value"] is None for r in out["ratios"] if "final NMSE" in r["ratio"] and "float32" in r["ratio"])
    frame = acceleration_frame(out)
    assert "anderson m=2" in frame.index and "float16" in out
