"""decinv.analysis.grid: the fewest runs for a grid of iteration counts, read-offs equal to separate runs, labels from keys."""

import numpy as np
import pandas as pd
import pytest
import torch

import decinv
from decinv.analysis import grid
from decinv.generation.experiments import real_instances
from decinv.analysis.lab import Lab, Setting


@pytest.fixture(scope="module")
def lab():
    model = decinv.load_model("tiny")
    return Lab(model, real_instances(model, 2, 64, 64, seed=0))


def test_runs_for_groups_counts_that_share_a_schedule():
    assert grid.runs_for([20, 30, 50, 100], None) == {100: [20, 30, 50, 100]}  # fixed lr: one long run
    assert grid.runs_for([20, 50], "warmup-cosine") == {20: [20], 50: [50]}  # stretches over the whole run
    assert grid.runs_for([20, 50, 100, 200], "paper") == {20: [20], 50: [50], 200: [100, 200]}  # cap 100
    assert grid.runs_for([20, 50, 100, 200], "paper", 0) == {20: [20], 50: [50], 100: [100], 200: [200]}
    assert grid.runs_for([8, 2, 5], "paper", 5) == {2: [2], 8: [5, 8]}
    assert grid.horizon(200, "paper") == 100 and grid.horizon(200, "paper", 0) == 200
    assert grid.horizon(200, None) is None and grid.horizon(30, "warmup-cosine") == 30
    assert grid.same_prefix(100, 200) and not grid.same_prefix(50, 100)
    assert grid.same_prefix(100, 200, 100) and not grid.same_prefix(100, 200, 0)
    with pytest.raises(ValueError, match=">= 1"):
        grid.runs_for([0, 5], None)


def test_schedule_cap_is_a_setting_field():
    s = Setting("gradfree-adam", 8, lr=0.01, schedule="paper", schedule_cap=5)
    assert s.options() == {"lr": 0.01, "schedule": "paper", "schedule_cap": 5}
    assert "horizon cap 5" in s.label and s.key != Setting("gradfree-adam", 8, lr=0.01, schedule="paper").key
    assert "schedule_cap" not in Setting("gradfree-adam", 8, lr=0.01, schedule="paper").options()
    with pytest.raises(ValueError, match="schedule_cap"):
        Setting("gradient-adam", 8, lr=0.1, schedule="warmup-cosine", schedule_cap=5)


def test_read_off_values_equal_separate_runs(lab):
    free = grid.sweep(lab, "gradfree-adam", [2, 3, 5], lr=0.01, schedule="paper", schedule_cap=3)
    assert set(free["run_steps"]) == {2, 5} and len(free) == 3 * 2
    assert list(free["read_off"]) == [False, False, True, True, False, False]
    alone = lab.run(Setting("gradfree-adam", 3, lr=0.01, schedule="paper", schedule_cap=3))
    np.testing.assert_allclose(grid.per_image(free, 3), alone.nmse_db[3], atol=1e-5)
    fixed = grid.sweep(lab, "gradient-adam", [1, 3], lr=0.01)
    assert set(fixed["run_steps"]) == {3}
    alone = lab.run(Setting("gradient-adam", 1, lr=0.01))
    np.testing.assert_allclose(grid.per_image(fixed, 1, lr=0.01), alone.nmse_db[1], atol=1e-5)
    direct = decinv.invert(lab.instances.x, lab.model, "gradient-adam", 3, lr=0.01, schedule=None,
                           z_true=lab.instances.z_true, progress=False)
    np.testing.assert_allclose(grid.per_image(fixed, 3), direct.trace.nmse_db[-1], atol=1e-5)
    seconds = fixed[fixed["iterations"] == 3]["seconds_per_image"]
    assert (seconds > 0).all() and seconds.nunique() == 1


def test_labels_follow_the_learning_rate(lab):
    """Changing the chapter's free_lr relabels every row: labels are derived from the keys, never passed in."""
    a = grid.summary(grid.sweep(lab, "gradfree-adam", [2], lr=0.01, schedule="paper"))
    b = grid.summary(grid.sweep(lab, "gradfree-adam", [2], lr=0.02, schedule="paper"))
    assert list(a["setting"]) == ["Grad-free 32-bit, 0.01 sched."] and list(a["lr_text"]) == ["0.01 scheduled"]
    assert list(b["setting"]) == ["Grad-free 32-bit, 0.02 sched."] and list(b["lr_text"]) == ["0.02 scheduled"]
    assert a["nmse_mean"].iloc[0] != b["nmse_mean"].iloc[0]
    fixed = grid.summary(grid.sweep(lab, "gradient-adam", [1, 2], lr=0.05))
    assert list(fixed["setting"]) == ["Grad-based 32-bit, 0.05 fixed"] * 2 and list(fixed["iterations"]) == [1, 2]
    assert list(fixed["read_off"]) == [True, False] and (fixed["n_images"] == 2).all()
    assert fixed["nmse_ci"].notna().all()


def test_summary_keeps_settings_apart_and_matches_the_per_image_mean(lab):
    frame = pd.concat([grid.sweep(lab, "gradfree-adam", [2], lr=0.01, schedule="paper"),
                       grid.sweep(lab, "gradfree-adam", [2], lr=0.01)], ignore_index=True)
    s = grid.summary(frame)
    assert len(s) == 2 and s["schedule"].iloc[0] == "paper" and s["schedule"].isna().iloc[1]
    assert list(s["setting"]) == ["Grad-free 32-bit, 0.01 sched.", "Grad-free 32-bit, 0.01 fixed"]
    np.testing.assert_allclose(s["nmse_mean"].iloc[0], grid.per_image(frame, 2, schedule="paper").mean())
    np.testing.assert_allclose(s["nmse_mean"].iloc[1], grid.per_image(frame, 2, schedule=None).mean())


def test_16_bit_sweeps_leave_the_shared_model_in_32_bit(lab):
    before = [p.detach().clone() for p in lab.model.vae.parameters()]
    frame = grid.sweep(lab, "gradfree-adam", [2], bits=16, lr=0.01, schedule="paper", n=1)
    assert len(frame) == 1 and frame["bits"].iloc[0] == 16 and np.isfinite(frame["nmse_db"]).all()
    assert lab.model.dtype == torch.float32 and lab.model_at(16).dtype == torch.float16
    assert lab.model_at(32) is lab.model and lab.model_at(16) is lab.model_at(16)
    assert all(torch.equal(a, b) for a, b in zip(before, lab.model.vae.parameters()))


def test_a_lab_without_a_pixel_grid_decodes_no_iterates_and_gives_the_same_errors(lab):
    bare = Lab(lab.model, lab.instances, pixel_grid=())
    a = bare.run(Setting("gradfree-adam", 3, lr=0.01, schedule="paper"))
    b = lab.run(Setting("gradfree-adam", 3, lr=0.01, schedule="paper"))
    assert a.psnr_db == {} and set(b.psnr_db) == {0, 1, 2, 3}
    np.testing.assert_allclose(a.nmse_db, b.nmse_db, atol=1e-6)
