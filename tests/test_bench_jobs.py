"""The jobs benchmark suite starts the old loop and the job as processes of their own and compares them."""

import json
import math

import pytest

from decinv import bench
from decinv.bench import jobs as bench_jobs
from decinv.cli import main
from tests.conftest import small_vae


def test_quick_jobs_suite_times_both_processes_and_writes_strict_json(tmp_path, capsys):
    small_vae().save_pretrained(tmp_path / "vae")
    out = tmp_path / "cpu-jobs.json"
    assert "jobs" in bench.SUITES and "jobs" in bench.OPT_IN  # opt-in: not part of --suite all
    assert main(["bench", "--suite", "jobs", "--quick", "--model", str(tmp_path / "vae"), "--device", "cpu",
                 "--threads", "1", "--out", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    suite = doc["suites"]["jobs"]
    assert set(suite["table"]) == {"loop", "job"} and suite["setting"]["n"] == 4
    for name, row in suite["table"].items():
        assert row["images"] == 4 and 0 < row["phase_seconds"] < row["wall_seconds"], name
        assert row["cpu_seconds"] > 0 and row["max_rss_mib"] > 100  # python + torch + the model, absolute
        assert row["images_per_second"] == pytest.approx(4 / row["wall_seconds"])
    assert suite["table"]["job"]["batch"] == 2 and suite["table"]["loop"]["batch"] == 1
    speedup = suite["speedups"]["job"]["end_to_end"]
    assert speedup == pytest.approx(suite["table"]["job"]["images_per_second"] /
                                    suite["table"]["loop"]["images_per_second"])
    assert math.isfinite(speedup) and suite["target_met"] == (speedup >= 3)
    assert [r["ratio"] for r in doc["ratios"]] == ["job / loop, images/s end to end",
                                                  "job / loop, images/s inversion phase"]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("jobs")


def test_jobs_suite_refuses_what_it_cannot_start():
    with pytest.raises(TypeError, match="source string"):
        bench_jobs.jobs(object())
    with pytest.raises(ValueError, match="--device cpu"):
        bench_jobs.jobs("tiny", device="cuda")


def test_ed_worker_times_the_passes_per_image(tmp_path):
    small_vae().save_pretrained(tmp_path / "vae")
    assert bench_jobs.ed_main(["--model", str(tmp_path / "vae"), "--size", "16", "--batches", "1", "4",
                                "--threads", "1", "--repeat", "2", "--out", str(tmp_path / "ed.json")]) == 0
    ed = json.loads((tmp_path / "ed.json").read_text())
    assert set(ed) == {"1"} and set(ed["1"]) == {"1", "4"}
    assert all(v["wall_ms"] > 0 and v["cpu_ms"] > 0 for v in ed["1"].values())
