"""decinv.core.work: what each solver iteration, operator evaluation and diffusion inversion adds, in items x
iterations, and that counting changes no result."""

import pytest
import torch
from diffusers import DDIMScheduler

import decinv
from decinv.core import work
from decinv.core.work import count_work
from decinv.generation.diffusion import ddim_invert
from tests.conftest import LinearCodec, small_unet, small_vae

FREE = ("forward-step", "inertial-km", "gradfree-adam", "anderson")


@pytest.fixture(scope="module")
def vae():
    return decinv.load_model(small_vae(), device="cpu")


@pytest.mark.parametrize("method", FREE)
def test_a_gradient_free_iteration_is_one_e_of_d_per_image(linear, method):
    x, z = linear.problem(batch=3)
    with count_work() as w:
        decinv.invert(x, linear, method, 4, z_true=z, progress=False)
    assert dict(w.done) == {"free32": 12} and not w.skipped  # 3 images x 4 iterations, E(x) not counted


def test_a_gradient_based_iteration_is_one_decoder_forward_and_backward_per_image(linear):
    x, _ = linear.problem(batch=3)
    with count_work() as w:
        decinv.invert(x, linear, "gradient-adam", 5, progress=False)
        decinv.invert(x, linear, "encoder", progress=False)  # no iterations: nothing
    assert dict(w.done) == {"grad32": 15} and not w.skipped


def test_the_kind_follows_the_networks_bits(vae):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    half = decinv.load_model(small_vae(), device="cpu", dtype=torch.bfloat16)
    with count_work() as w:
        decinv.invert(x, half, "gradfree-adam", 3, progress=False)
        decinv.invert(x, half, "gradient-adam", 2, progress=False)
        decinv.invert(x, vae, "gradient-adam", 1, chunk_size=1, progress=False)  # chunks: still one per image
    assert dict(w.done) == {"free16": 6, "grad16": 4, "grad32": 2}
    assert work.kind(False, torch.float64) == "free64" and work.kind(True, torch.float16) == "grad16"


def test_operator_evaluations_count_per_image_and_per_frame(vae):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    T = decinv.operator(vae, x)  # encoding E(x): not counted
    with count_work() as w:
        T(T.e)
        T.ed(T.e[:1])
        T.ed(T.e[:1].expand(3, 5, *T.e.shape[1:]).clone())  # 3 clips of 5 frames of a frame-wise autoencoder
    assert dict(w.done) == {"free32": 2 + 1 + 15}
    assert work.items(torch.zeros(3, 5, 4, 2, 2)) == 15 and work.items(torch.zeros(3, 5, 4, 2, 2), temporal=True) == 3


def test_a_run_that_stops_early_counts_what_ran_and_what_it_skipped(linear):
    x, z = linear.problem(batch=3)
    with count_work() as w:
        converged = decinv.invert(x, linear, "forward-step", 10, tol=1e9, step_size=0.1, progress=False)
    assert converged.status.startswith("converged") and len(converged.trace) == 1
    assert w.done == {"free32": 3} and w.skipped == {"free32": 27} and w.asked() == {"free32": 30}
    with count_work() as w:
        failed = decinv.invert(x, linear, "forward-step", 10, step_size=1e30, progress=False)
    assert failed.failed
    ran = len(failed.trace) + 1  # the iteration that found the non-finite value ran
    assert w.done == {"free32": 3 * ran} and w.asked() == {"free32": 30}
    with count_work() as w:
        failed = decinv.invert(x, linear, "gradient-adam", 10, lr=1e30, progress=False)
    assert failed.failed and w.asked() == {"grad32": 30} and w.skipped["grad32"] > 0


def test_diffusion_inversion_counts_one_per_latent_whatever_its_steps():
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    with count_work() as w:
        ddim_invert(small_unet(), scheduler, torch.randn(3, 4, 8, 8), 4)
    assert dict(w.done) == {work.DIFFUSION_INVERSION: 3}


def test_counters_nest_close_and_change_no_result(linear):
    x, z = linear.problem(batch=2)
    plain = decinv.invert(x, linear, "anderson", 6, progress=False)
    with count_work() as outer:
        with count_work() as inner:
            counted = decinv.invert(x, linear, "anderson", 6, progress=False)
        decinv.invert(x, linear, "forward-step", 1, progress=False)
    decinv.invert(x, linear, "forward-step", 1, progress=False)  # no counter open: counted nowhere
    assert torch.equal(plain.z, counted.z)
    assert inner.done == {"free32": 12} and outer.done == {"free32": 14}


def test_a_fp16_linear_map_is_free16():
    codec = LinearCodec(dtype=torch.float16)
    x, _ = codec.problem(batch=2)
    with count_work() as w:
        decinv.invert(x, codec, "forward-step", 3, progress=False)
    assert dict(w.done) == {"free16": 6}
