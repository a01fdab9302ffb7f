"""decinv.analysis.lab: settings keyed by data, runs recorded and replayed, stopping rules and matched comparisons."""

import math

import numpy as np
import pytest
import torch

import decinv
from decinv.generation.experiments import real_instances
from decinv.analysis.lab import Lab, NotRecordedError, Setting, at_time, stopping, time_to


@pytest.fixture(scope="module")
def lab():
    model = decinv.load_model("tiny")
    return Lab(model, real_instances(model, 3, 128, 128, seed=0), meta={"what": "test"})


def test_labels_and_options_come_from_the_fields():
    s = Setting("gradfree-adam", 50, lr=0.02, schedule="paper")
    assert s.options() == {"lr": 0.02, "schedule": "paper"}
    assert "lr 0.02 paper schedule" in s.label and "50 it." in s.label  # a changed lr changes the label
    assert Setting("forward-step", 10, lr=0.3).options() == {"step_size": 0.3}
    assert Setting("gradient-adam", lr=0.01).options() == {"lr": 0.01, "schedule": None}
    assert Setting("gradient-adam", lr=0.01).key != Setting("gradient-adam", lr=0.1).key
    with pytest.raises(ValueError, match="no learning-rate schedule"):
        Setting("forward-step", schedule="paper")
    with pytest.raises(ValueError, match="bits must be 32 or 16"):
        Setting("encoder", 0, bits=8)


def test_a_live_run_records_latent_and_pixel_errors_and_replays(lab, tmp_path):
    run = lab.run(method="forward-step", steps=5, lr=0.5, eq14_window=3)
    assert run.nmse_db.shape == (6, 3) and run.residual.shape == (5, 3) and len(run.seconds) == 5
    assert set(run.psnr_db) == {0, 1, 2, 3, 5}
    model = lab.model
    direct = decinv.invert(lab.instances.x, model, "forward-step", 5, step_size=0.5, z_true=lab.instances.z_true,
                           progress=False)
    np.testing.assert_allclose(run.nmse_db[1:], direct.trace.nmse_db, atol=1e-4)
    np.testing.assert_allclose(run.psnr_db[5], decinv.psnr(model.decode(direct.z), lab.instances.x).numpy(), atol=1e-3)
    assert run.eq14["min_ratio"].shape == (3,) and np.isfinite(run.eq14["min_ratio"]).all()
    assert lab.run(method="forward-step", steps=5, lr=0.5) is run  # cached by key
    lab.picture("x", lab.instances.x[:2])
    assert lab.scalar("half", lambda: 0.5) == 0.5 and lab.scalar("half", lambda: 1 / 0) == 0.5  # computed once
    path = lab.save(tmp_path / "record.json", note="n")
    assert not list(tmp_path.glob("*.tmp"))
    again = Lab.replay(path)
    assert not again.live and again.meta["note"] == "n" and again.meta["measured"]["commit"]
    replayed = again.run(Setting("forward-step", 5, lr=0.5))
    np.testing.assert_allclose(replayed.nmse_db, run.nmse_db, atol=1e-4)
    np.testing.assert_allclose(replayed.eq14["min_ratio"], run.eq14["min_ratio"], atol=1e-4)
    assert again.picture("x").shape == (2, 128, 128, 3) and again.scalar("half", None) == 0.5
    with pytest.raises(NotRecordedError, match="no value 'other'"):
        again.scalar("other", lambda: 1.0)
    with pytest.raises(NotRecordedError, match="DECINV_TAESD_DIR"):
        again.run(Setting("forward-step", 6, lr=0.5))
    frame = again.frame()
    assert {"method", "bits", "lr", "k", "nmse_db", "psnr_db"} <= set(frame.columns) and len(frame) == 6


def test_sixteen_bit_runs_on_a_copy(lab):
    run = lab.run(method="gradfree-adam", steps=2, bits=16, lr=0.01, schedule="paper", n=2)
    assert lab.model.dtype == torch.float32 and run.nmse_db.shape == (3, 2)
    assert lab.run(method="gradient-adam", steps=2, bits=16, lr=0.1, schedule="warmup-cosine", n=2).status


def test_the_tol_rule_is_what_invert_with_tol_returns(lab):
    run = lab.run(method="forward-step", steps=8, lr=0.5)
    tol = float(np.median(run.residual[3]))
    rules = stopping(run, tol=tol, budget=4)
    direct = decinv.invert(lab.instances.x, lab.model, "forward-step", 8, step_size=0.5, tol=tol,
                           z_true=lab.instances.z_true, progress=False)
    want = decinv.nmse_db(direct.z, lab.instances.z_true).numpy()
    got = rules[rules.rule == "tol"].sort_values("image").nmse_db.to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert (rules[rules.rule == "budget"].k == 4).all()
    best = rules[rules.rule == "smallest residual"]
    assert all(run.residual[k, i] == run.residual[:, i].min() for k, i in zip(best.k, best.image))


def test_matched_time_and_matched_error(lab):
    run = lab.run(method="forward-step", steps=8, lr=0.5)
    assert at_time(run, -1) == pytest.approx(run.nmse_db[0].mean())
    assert at_time(run, run.seconds[-1]) == pytest.approx(run.nmse_db[-1].mean())
    target = run.nmse_db.mean(1)[4]
    assert time_to(run, target) <= run.seconds[3] and time_to(run, -1e9) == math.inf
