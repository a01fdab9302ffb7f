"""The benchmark suites run end to end on a small random autoencoder, return their keys, and write loadable JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import decinv
from decinv import bench
from decinv.bench import acceleration, dtype, overhead, tradeoff, video
from tests.conftest import small_vae


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here: on a busy 2-core machine, 2 threads make these tiny workloads ~100x slower
    (each parallel region waits for a descheduled thread), while 1 thread is unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return decinv.load_model(small_vae(), device="cpu")


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_time_to_reach_interpolates_in_steps():
    curve = [{"steps": 10, "seconds": 1.0, "nmse_db": -10.0, "peak_memory_bytes": 5},
             {"steps": 20, "seconds": 2.0, "nmse_db": -20.0, "peak_memory_bytes": 7}]
    hit = tradeoff.time_to_reach(-15.0, curve)
    assert hit["reached"] and hit["steps"] == pytest.approx(15.0) and hit["seconds"] == pytest.approx(1.5)
    assert hit["peak_memory_bytes"] == 7
    assert tradeoff.time_to_reach(-5.0, curve)["seconds"] == 1.0  # the first point already reaches it
    miss = tradeoff.time_to_reach(-25.0, curve)
    assert not miss["reached"] and miss["best_nmse_db"] == -20.0


def test_overhead(model):
    out = overhead.overhead(model, device="cpu", quick=True, progress=False)
    for key in ("gradfree_per_iter_over_bare_ED", "gradient_per_iter_over_bare_Dfb", "gradient_over_gradfree_per_iter",
                "gradfree_per_iter_over_bare_ED_min", "gradient_per_iter_over_bare_Dfb_min"):
        assert _positive(out[key]), key
    assert len(out["raw"]["gradfree_per_iter"]) == out["setting"]["repeat"]
    assert len(out["raw"]["bare_ED_seconds"]) == out["setting"]["repeat"] * out["setting"]["inner"]
    assert _positive(out["bookkeeping_per_iter_seconds"]["gradfree-adam+nmse"]["median"])
    assert all(r["suite"] == "overhead" for r in out["ratios"])


def test_overhead_on_bundled_tiny_model():
    out = overhead.overhead("tiny", device="cpu", quick=True, progress=False)
    assert out["setting"]["model"]["name"] == "tiny" and _positive(out["gradfree_per_iter_over_bare_ED"])


def test_tradeoff(model):
    out = tradeoff.tradeoff(model, device="cpu", quick=True, progress=False)
    curve = out["points"]["gradfree-adam"]["0.01 scheduled"]
    assert [p["steps"] for p in curve] == sorted(out["setting"]["gradfree_steps"])  # K >= cap read off one run
    assert {p["from_run_steps"] for p in curve if p["steps"] >= out["setting"]["schedule_cap"]} == {8}
    grad = out["points"]["gradient-adam"]["0.1 scheduled"]
    assert [p["steps"] for p in grad] == list(out["setting"]["gradient_steps"])
    for p in curve + grad:
        assert math.isfinite(p["nmse_db"]) and _positive(p["seconds"])
    assert len(out["comparisons"]) == len(grad)
    for c in out["comparisons"]:
        assert c["time_ratio"] is None or _positive(c["time_ratio"])
        assert c["memory_ratio"] is None or c["memory_ratio"] >= 0
    assert {"best_gradient_nmse_db", "reaches_exact", "reaches_within_1db", "time_ratio_exact"} <= set(out["headline"])


def _curve(*pairs):
    return [{"steps": k, "nmse_db": v, "seconds": 0.1 * k, "cpu_seconds": 0.1 * k, "peak_memory_bytes": 10}
            for k, v in pairs]


def _tradeoff_doc(encoder_db):
    grad = _curve((20, -18.0), (100, -20.0))
    for p in grad:
        p["seconds"] = p["cpu_seconds"] = 0.5 * p["steps"]
    return {"setting": {"gradient_settings": [["0.1 scheduled", 0.1, "warmup-cosine"]], "gradient_steps": [20, 100]},
            "encoder_nmse_db": encoder_db,
            "points": {"gradfree-adam": {"0.01 scheduled": _curve((10, -19.0), (50, -21.0))},
                       "gradient-adam": {"0.1 scheduled": grad}}}


def test_tradeoff_marks_comparisons_the_encoder_already_wins_as_degenerate():
    fine = tradeoff.summarize_tradeoff(_tradeoff_doc(encoder_db=-15.0))
    assert not fine["headline"]["degenerate_exact"] and fine["headline"]["time_ratio_exact"] > 1
    assert all(c["time_ratio"] is not None for c in fine["comparisons"])
    degenerate = tradeoff.summarize_tradeoff(_tradeoff_doc(encoder_db=-20.5))
    h = degenerate["headline"]
    assert h["degenerate_exact"] and h["time_ratio_exact"] is None and h["time_ratio_exact_cpu"] is None
    assert all(c["degenerate"] and c["time_ratio"] is None for c in degenerate["comparisons"])
    assert degenerate["max_time_ratio"] is None
    assert any(str(r["value"]).startswith("degenerate") for r in degenerate["ratios"])
    # -19.5 dB: beats the 20-iteration run (degenerate there) but not the best (a real comparison)
    mixed = tradeoff.summarize_tradeoff(_tradeoff_doc(encoder_db=-19.5))
    assert [c["degenerate"] for c in mixed["comparisons"]] == [True, False]
    assert not mixed["headline"]["degenerate_exact"] and mixed["headline"]["degenerate_within_1db"]


def test_video(model):
    out = video.video(model, device="cpu", quick=True, progress=False)
    frames, chunks = out["setting"]["frames"], out["setting"]["chunk_sizes"]
    assert len(out["runs"]) == len(frames) * 2 * len(chunks)
    assert all(r["status"] == "completed" for r in out["runs"])
    assert _positive(out["per_iter_time_ratio_unchunked"])
    assert out["memory_ratio_unchunked"] >= 0
    assert set(out["gradfree_chunked_flat"]) == {str(c) for c in chunks if c}


def test_dtype(model):
    out = dtype.dtype_suite(model, device="cpu", quick=True, progress=False)
    runs = out["runs"]
    assert set(runs) == {f"{m}|{d}" for m in ("gradfree-adam", "gradient-adam") for d in ("fp32", "bf16", "fp16")}
    assert out["cpu_half_timings_not_gpu_claims"] and "NOT" in out["cpu_half_note"]
    for d in ("fp32", "bf16", "fp16"):
        assert not runs[f"gradfree-adam|{d}"]["failed"]
        assert _positive(runs[f"gradfree-adam|{d}"]["time_ratio_vs_fp32"])
    assert runs["gradient-adam|fp16"]["status"]  # a status string whether or not it failed
    assert runs["gradient-adam|fp16"]["failed"] == runs["gradient-adam|fp16"]["status"].startswith("failed")


def test_cli_writes_json_and_prints_table_last(tmp_path, capsys):
    from decinv.cli import main

    folder = tmp_path / "vae"
    small_vae().save_pretrained(folder)
    out = tmp_path / "res" / "cpu-overhead.json"
    assert main(["bench", "--suite", "overhead", "--quick", "--model", str(folder), "--device", "cpu",
                 "--threads", "1", "--out", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())  # strict JSON: no NaN
    env = doc["environment"]
    assert env["device_type"] == "cpu" and env["torch_threads"] == 1 and env["device_name"]
    assert {"torch", "diffusers", "git_commit", "date"} <= set(env)
    assert set(doc["suites"]) == {"overhead"} and doc["quick"] is True
    assert doc["ratios"] and all({"suite", "ratio", "value", "target"} <= set(r) for r in doc["ratios"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("overhead")  # the ratio table comes last
    assert bench.format_table(doc).splitlines()[-1] == printed[-1]


def test_reanalyse_applies_todays_tradeoff_rules_to_a_committed_document():
    tr = _tradeoff_doc(encoder_db=-20.5)
    old_rows = [{"suite": "overhead", "ratio": "a", "value": 1.0, "target": "", "note": ""},
                {"suite": "tradeoff", "ratio": "headline: stale", "value": 16.8, "target": "", "note": ""},
                {"suite": "dtype", "ratio": "b", "value": 2.0, "target": "", "note": ""}]
    doc = {"suites": {"tradeoff": tr}, "ratios": old_rows}
    tradeoff.reanalyse(doc)
    suites = [r["suite"] for r in doc["ratios"]]
    assert suites[0] == "overhead" and suites[-1] == "dtype" and "headline: stale" not in {r["ratio"] for r in doc["ratios"]}
    assert tr["headline"]["degenerate_exact"] and tr["headline"]["time_ratio_exact"] is None
    assert tradeoff.reanalyse({"suites": {}, "ratios": []}) == {"suites": {}, "ratios": []}


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "results").glob("*.json")),
                         ids=lambda p: p.name)
def test_recorded_results_still_read_with_todays_code(path):
    """Every committed benchmark record reanalyses, prints its ratio table and (acceleration) makes its frame."""
    doc = json.loads(path.read_text())
    if not str(doc.get("schema", "")).startswith("decinv-bench/"):
        pytest.skip("not a benchmark record")
    doc = tradeoff.reanalyse(doc)
    lines = bench.format_table(doc).splitlines()
    assert len(lines) >= 1 + len(doc["ratios"]) and set(doc["suites"]) <= set(bench.SUITES)
    if "acceleration" in doc["suites"]:
        assert len(acceleration.acceleration_frame(doc["suites"]["acceleration"])) > 0
