"""Blended-latent editing through a (recovered) DDIM trajectory (paper Sec. 5.2, Fig. 4; decinv.applications.editing)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from conftest import small_unet, small_vae
from decinv.applications import editing as ed
from decinv.generation.diffusion import ddim_invert, ddim_sample
from decinv.generation.experiments import quantize_8bit
from decinv.core.models import LatentModel
from decinv.tiny.train import SCHEDULER_CONFIG

SCHED_CONFIG = SCHEDULER_CONFIG  # the bundled miniature's scheduler
STEPS = 6


@pytest.fixture(scope="module")
def scheduler():
    return DDIMScheduler(**SCHED_CONFIG)


@pytest.fixture(scope="module")
def unet():
    return small_unet()


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def oracle(unet, scheduler):
    return ed.sample_trajectory(unet, scheduler, randn(3, 4, 8, 8), STEPS)


def test_trajectories_match_the_diffusion_module_bit_for_bit(unet, scheduler, oracle):
    assert oracle.latents.shape == (STEPS + 1, 3, 4, 8, 8) and oracle.steps == STEPS
    assert torch.equal(oracle.z_T, randn(3, 4, 8, 8))
    assert torch.equal(oracle.z_0, ddim_sample(unet, scheduler, oracle.z_T, STEPS))
    inv = ed.inversion_trajectory(unet, scheduler, oracle.z_0, STEPS)
    assert torch.equal(inv.z_0, oracle.z_0) and torch.equal(inv.timesteps, oracle.timesteps)
    assert torch.equal(inv.z_T, ddim_invert(unet, scheduler, oracle.z_0, STEPS))
    # Same noise levels index by index: inverting the oracle's z_0 lands near the oracle's latents, not elsewhere.
    for i in range(STEPS + 1):
        err = (inv.latents[i] - oracle.latents[i]).norm() / oracle.latents[i].norm()
        assert err < 0.5, (i, float(err))
    res = ed.resampled_trajectory(unet, scheduler, oracle.z_0, STEPS)
    assert torch.equal(res.z_T, inv.z_T) and torch.equal(res.z_0, ddim_sample(unet, scheduler, inv.z_T, STEPS))


def test_zero_mask_leaves_the_trajectory_unchanged(unet, scheduler, oracle):
    for traj in (oracle, ed.inversion_trajectory(unet, scheduler, oracle.z_0, STEPS)):
        edit = ed.blended_edit(unet, scheduler, traj, torch.zeros(8, 8), randn(3, 4, 8, 8, seed=1),
                               return_trajectory=True)
        assert torch.equal(edit.latents, traj.latents)


def test_oracle_edit_keeps_the_background_exactly_and_changes_the_region(unet, scheduler, oracle):
    mask = ed.box_mask(8, (0.25, 0.75, 0.25, 0.5))
    z = ed.blended_edit(unet, scheduler, oracle, mask, randn(3, 4, 8, 8, seed=1))
    keep = (mask == 0).expand_as(z)
    assert torch.equal(z[keep], oracle.z_0[keep])
    assert (z[~keep] - oracle.z_0[~keep]).abs().mean() > 0.1


def test_full_mask_is_plain_sampling_from_the_new_noise(unet, scheduler, oracle):
    noise = randn(3, 4, 8, 8, seed=2)
    z = ed.blended_edit(unet, scheduler, oracle, torch.ones(1, 1, 8, 8), noise)
    torch.testing.assert_close(z, ddim_sample(unet, scheduler, noise, STEPS), rtol=0, atol=1e-6)


def test_mask_validation_names_the_fix(oracle, unet, scheduler):
    z = oracle.z_T
    with pytest.raises(ValueError, match=r"pixel mask.*max_pool2d\(mask.float\(\), 4\)"):
        ed.check_mask(torch.zeros(1, 1, 32, 32), z)
    with pytest.raises(ValueError, match="B = 3"):
        ed.check_mask(torch.zeros(2, 1, 8, 8), z)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ed.check_mask(torch.full((8, 8), 2.0), z)
    assert ed.check_mask(torch.ones(8, 8, dtype=torch.bool), z).shape == (1, 1, 8, 8)
    assert ed.check_mask(torch.ones(3, 8, 8), z).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="noise has shape"):
        ed.blended_edit(unet, scheduler, oracle, torch.zeros(8, 8), torch.zeros(1, 4, 8, 8))
    other = DDIMScheduler(**{**SCHED_CONFIG, "steps_offset": 0})
    with pytest.raises(ValueError, match="another DDIM grid"):
        ed.blended_edit(unet, other, oracle, torch.zeros(8, 8), torch.zeros_like(z))


def test_box_mask_and_dilate():
    m = ed.box_mask(16, (0.25, 0.75, 0.5, 1.0))
    assert m.shape == (1, 1, 16, 16) and m.sum() == 8 * 8 and m[0, 0, 4, 8] == 1 and m[0, 0, 3, 8] == 0
    assert ed.box_mask((8, 16)).sum() == 4 * 8
    d = ed.dilate(m, 1)
    assert d.sum() == 10 * 9 and torch.equal(ed.dilate(m, 0), m)  # grows 1 cell, clipped at the right edge
    for bad in [(0.5, 0.5, 0, 1), (0, 1.2, 0, 1), (0, 1, 0, 1), (0.5, 0.51, 0.5, 0.51)]:
        with pytest.raises(ValueError):
            ed.box_mask(16, bad)
    assert ed.pixel_mask(m, 4).shape == (1, 1, 64, 64) and ed.pixel_mask(m, 4).sum() == 16 * m.sum()


def test_background_errors_ignore_the_edited_region():
    x = torch.full((2, 3, 8, 8), 0.5)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    e = x.clone()
    e[..., :4, :] = -1  # a huge change inside the region is not background error
    e[1, :, 4:, :] += 0.1
    out = ed.background_errors(e, x, mask)
    assert torch.isneginf(out["nmse_db"][0]) and torch.isposinf(out["psnr_db"][0])
    assert float(out["nmse_db"][1]) == pytest.approx(10 * np.log10(0.01 / 0.25), abs=1e-4)
    assert float(out["psnr_db"][1]) == pytest.approx(10 * np.log10(4 / 0.01), abs=1e-4)


def test_calibrate_and_matched_iterations_recover_a_linear_cost():
    calls = []

    def run(k):
        calls.append(k)
        return 0.5 + 0.2 * k

    fixed, per = ed.calibrate(run, (2, 7))
    assert calls == [2, 2, 7] and fixed == pytest.approx(0.5) and per == pytest.approx(0.2)
    noisy = iter([9.0, 3.0, 2.0, 0.9, 1.5])  # warm-up, then (a, b) twice; the fastest time per length counts

    fixed2, per2 = ed.calibrate(lambda k: next(noisy), (2, 7), repeats=2)
    assert per2 == pytest.approx(0.12) and fixed2 == pytest.approx(0.66)
    order = []
    fits = ed.calibrate_together({"a": (lambda k: order.append(("a", k)) or 1.0 + k, (1, 3), 2),
                                  "b": (lambda k: order.append(("b", k)) or 2.0 * k, (2, 4), 1)})
    assert order == [("a", 1), ("b", 2), ("a", 1), ("a", 3), ("b", 2), ("b", 4), ("a", 1), ("a", 3)]  # interleaved
    assert fits["a"] == pytest.approx((1.0, 1.0)) and fits["b"] == pytest.approx((0.0, 2.0))
    assert ed.matched_iterations(10.5, fixed, per) == 50
    assert ed.matched_iterations(0.6, fixed, per) == 1  # at least one iteration, even over budget
    # load noise: the longer run was faster; the fit charges its whole time to its iterations, not a ~0 slope
    flat = iter([1.0, 2.0, 1.5])
    fixed3, per3 = ed.calibrate(lambda k: next(flat), (1, 3))
    assert (fixed3, per3) == (0.0, pytest.approx(0.5)) and ed.matched_iterations(2.0, fixed3, per3) == 4
    with pytest.raises(ValueError):
        ed.matched_iterations(1.0, 0.0, 0.0)


def test_compare_on_a_random_pipeline(unet, scheduler, oracle):
    from types import SimpleNamespace

    model = LatentModel(small_vae("tiny"), "random")
    pipe = SimpleNamespace(unet=unet, scheduler=scheduler)
    x = quantize_8bit(model.decode(oracle.z_0)).clamp(-1, 1)
    mask = ed.box_mask(8, (0.25, 0.75, 0.25, 0.75))
    before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    cmp = ed.compare(x, oracle, model, pipe, mask, randn(3, 4, 8, 8, seed=1), budgets=[2, 3],
                     calibration=((1, 2), 1), calibration_16bit=((1, 2), 1), margin=1, log=lambda *_: None)
    labels = [r.label for r in cmp.rows]
    assert labels[:3] == ["Oracle (true trajectory)", "Encoder", "Grad-free 32-bit, 2 it."]
    assert len(labels) == 2 + 3 * 2 and len(cmp.plan) == 2 and model.dtype == torch.float32
    assert all(torch.equal(v, before[k]) for k, v in model.vae.state_dict().items())  # 16-bit ran on a copy
    assert [r.bits for r in cmp.rows[2:5]] == [32, 32, 16] and cmp.plan[0]["Grad-free 32-bit: iterations"] == 2
    oracle_row = cmp.row("Oracle (true trajectory)")
    assert np.all(np.isneginf(oracle_row.metrics["z0 NMSE (dB)"]))
    assert np.all(np.isneginf(oracle_row.metrics["edit vs oracle, inside (dB)"]))
    enc = cmp.row("Encoder").metrics["z0 NMSE (dB)"]
    np.testing.assert_allclose(enc, ed.latent_nmse_db(model.encode(x), oracle.z_0), rtol=1e-6)  # weights intact
    table = cmp.table()
    assert table.loc["Oracle (true trajectory)", "z0 NMSE (dB)"] == "exact" and "±" in table.loc["Encoder", "z0 NMSE (dB)"]
    mean, half = ed.paired_difference(cmp.row("Encoder"), cmp.rows[2], "background NMSE (dB)")
    assert np.isfinite(mean) and half >= 0
    assert list(cmp.at_budget(1)) == ["Grad-free 32-bit", "Grad-based", "Grad-free 16-bit"]
    assert cmp.at_budget(1)["Grad-free 32-bit"].iterations == 3 and cmp.plan_table().shape[1] == 2
    worse = ed.Row("b", "x", 32, 1, 1.0, {"m": np.array([1.0, 2.0, 3.0])})
    better = ed.Row("a", "x", 32, 1, 1.0, {"m": np.array([0.0, 1.1, 1.9])})
    assert ed.paired_verdict(better, worse, "m")[0] == "better" and ed.paired_verdict(worse, better, "m")[0] == "worse"
    assert ed.paired_verdict(better, worse, "m", lower_is_better=False)[0] == "worse"
    assert ed.paired_verdict(worse, worse, "m")[0] == "undecided"
    with pytest.raises(ValueError, match="budgets"):
        ed.compare(x, oracle, model, pipe, mask, randn(3, 4, 8, 8), budgets=[0])
    with pytest.raises(ValueError, match="whole image"):
        ed.compare(x, oracle, model, pipe, mask, randn(3, 4, 8, 8), budgets=[2], margin=3)
