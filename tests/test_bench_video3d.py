"""The video3d benchmark suite: registered in decinv bench, runs on a tiny random AutoencoderKLWan, ratios per F."""

import json
import math

import pytest
import torch

from decinv import bench
from decinv.bench.video3d import invert_videos, small_video_autoencoder, video3d
from tests.autoencoder_zoo import tiny_wan


def test_registered_as_a_suite():
    assert "video3d" in bench.SUITES and "video3d" in bench.SUITE_NAMES
    assert bench.SUITES["video3d"] is video3d  # the suite function itself: no lazy wrapper, no import cycle


def test_quick_run_reports_side_by_side_ratios_per_frame_count():
    out = video3d("tiny", device="cpu", quick=True, progress=False)
    assert out["setting"]["model"]["class"] == "AutoencoderKLWan"  # 'tiny' is 2-D: replaced, and recorded
    assert out["setting"]["model"]["source"] == "random AutoencoderKLWan"
    assert "AutoencoderKLWan" in out["setting"]["model"]["repr"]  # the benchmark page reads setting.model.repr
    assert [t["frames"] for t in out["table"]] == [1, 5] and [t["latent_frames"] for t in out["table"]] == [1, 2]
    for t in out["table"]:
        assert math.isfinite(t["memory_ratio"]) and t["gradfree_per_iter_s"] > 0 and t["gradient_per_iter_s"] > 0
    assert len(out["ratios"]) == 2 and not out["failed_runs"]
    assert all(r["status"] == "completed" for r in out["runs"])
    json.dumps(bench.jsonable(out), allow_nan=False)


def test_a_temporal_model_passed_in_is_used_as_is():
    model = small_video_autoencoder({"base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1], "num_res_blocks": 1,
                                     "temperal_downsample": [True, True], "latents_mean": [0.0] * 4,
                                     "latents_std": [1.0] * 4})
    out = video3d(model, device="cpu", quick=True, progress=False)
    assert out["setting"]["model"]["source"] == "argument" and out["setting"]["model"]["config"]["z_dim"] == 4


@pytest.mark.parametrize("method", ["gradfree-adam", "gradient-adam"])
def test_invert_videos_moves_the_latent(method):
    from decinv import load_model

    model = load_model(tiny_wan(), device="cpu")
    x = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    result, cpu = invert_videos(x, model, method, 3)
    z = result.z
    assert z.shape == (1, 2, 4, 4, 4) and torch.isfinite(z).all() and result.status == "completed"
    assert not torch.equal(z, model.encode(x)) and len(cpu) == 3 and result.seconds > 0
