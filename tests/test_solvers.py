"""The solvers against theory (linear maps with known cocoercivity) and on real (random) AutoencoderKLs."""

import numpy as np
import pytest
import torch

import decinv
from decinv.core.solvers import km_condition, paper_schedule, warmup_cosine_schedule
from tests.conftest import LinearCodec, small_vae


def final_nmse_db(result):
    return float(np.mean(result.trace.nmse_db[-1]))


# --- theory: Theorem 1 and 2 on T(z) = M (z - z*), beta = 1 / lambda_max(M) = 0.5 ---------------------------------

def test_forward_step_converges_below_two_beta(linear):
    x, z = linear.problem()
    result = decinv.invert(x, linear, "forward-step", 200, z_true=z, step_size=1.5 * linear.beta,
                           beta=linear.beta, progress=False)
    assert result.info["theorem1_condition"]
    assert final_nmse_db(result) < -60
    above_float32_floor = result.trace.residual.mean(1)[:15]
    assert (np.diff(above_float32_floor) <= 0).all()  # for this SPD map the residual never grows


def test_forward_step_diverges_above_two_over_L(linear):
    x, z = linear.problem()
    result = decinv.invert(x, linear, "forward-step", 60, z_true=z, step_size=2.5 * linear.beta,
                           beta=linear.beta, progress=False)
    assert not result.info["theorem1_condition"]
    assert result.trace.residual[-1].mean() > 100 * result.trace.residual[0].mean()


def test_inertial_km_converges_under_condition_13(linear):
    x, z = linear.problem()
    alpha, lam = 0.5, 0.2  # (13): 0.2 * (1 - 0.5 + 0.5) = 0.2 < 0.25
    result = decinv.invert(x, linear, "inertial-km", 200, z_true=z, alpha=alpha, step_size=2 * lam * linear.beta,
                           beta=linear.beta, progress=False)
    assert result.info["condition_13"] and result.info["lam"] == pytest.approx(lam)
    assert final_nmse_db(result) < -60


def test_km_condition_values():
    assert km_condition(0.9, 0.0058) and not km_condition(0.9, 0.0059)  # bound 0.01 / 1.72 = 0.005814
    assert not km_condition(1.0, 0.001) and not km_condition(0.5, 0.0)


def test_gradfree_adam_reaches_stated_nmse_on_a_mildly_nonlinear_map():
    codec = LinearCodec(nonlinearity=0.05)
    x, z = codec.problem()
    encoder = decinv.invert(x, codec, "encoder", z_true=z, progress=False)
    assert len(encoder.trace) == 0
    start = float(decinv.nmse_db(encoder.z, z).mean())
    result = decinv.invert(x, codec, "gradfree-adam", 200, z_true=z, lr=0.01, progress=False)
    assert final_nmse_db(result) < -30 and final_nmse_db(result) < start - 15


def test_gradient_adam_converges_on_a_mildly_nonlinear_map():
    codec = LinearCodec(nonlinearity=0.05)
    x, z = codec.problem()
    result = decinv.invert(x, codec, "gradient-adam", 200, z_true=z, lr=0.01, schedule=None, progress=False)
    assert final_nmse_db(result) < -30
    assert result.trace.residual_kind.startswith("pixel")


def test_tol_freezes_converged_samples_and_stops(linear):
    x, z = linear.problem()
    seen = []
    result = decinv.invert(x, linear, "forward-step", 500, z_true=z, step_size=linear.beta, tol=1e-6,
                           callback=lambda info: seen.append(info.k), progress=False)
    assert result.status.startswith("converged") and result.steps_run < 500
    assert seen == list(range(result.steps_run))
    assert (result.trace.residual[-1] < 1e-6).all()


def test_non_finite_values_are_reported_not_returned(linear):
    x, z = linear.problem()
    result = decinv.invert(x, linear, "forward-step", 2000, step_size=10.0, progress=False)  # blows up to inf
    assert result.failed and "non-finite" in result.status
    assert torch.isfinite(result.z).all() and result.steps_run < 2000


def test_fp16_gradient_adam_underflow_is_detected_while_gradfree_survives():
    """Adam's default eps = 1e-8 is below fp16's smallest subnormal (6e-8), so it rounds to 0: any latent
    coordinate whose gradient is (or underflows to) zero gives 0 / 0. An exact encoder (E D = I) makes every
    gradient zero at z_0 = E(x). The gradient-free method's 16-bit eps (1e-4, official code) avoids this."""
    exact16 = LinearCodec(eigenvalues=(1.0, 1.0), dtype=torch.float16)
    x, _ = exact16.problem()
    failed = decinv.invert(x, exact16, "gradient-adam", 20, progress=False)
    assert failed.failed and "non-finite" in failed.status and torch.isfinite(failed.z).all()
    assert not decinv.invert(x, exact16, "gradfree-adam", 20, progress=False).failed
    exact32 = LinearCodec(eigenvalues=(1.0, 1.0))
    assert not decinv.invert(x.float(), exact32, "gradient-adam", 20, progress=False).failed


def test_fp16_gradfree_adam_needs_an_fp32_state_for_small_residuals():
    """With E D close to I the residual entries are below 7.7e-3, where (1 - beta2) g^2 underflows in fp16."""
    codec16, codec32 = LinearCodec((0.98, 1.02), dtype=torch.float16), LinearCodec((0.98, 1.02))
    x, z = codec16.problem()
    encoder = float(decinv.nmse_db(codec32.encode(x.float()), z.float()).mean())
    fp32 = final_nmse_db(decinv.invert(x.float(), codec32, "gradfree-adam", 50, z_true=z.float(), progress=False))
    mixed = decinv.invert(x, codec16, "gradfree-adam", 50, z_true=z, progress=False)
    pure = decinv.invert(x, codec16, "gradfree-adam", 50, z_true=z, master_dtype=None, progress=False)
    assert mixed.z.dtype == torch.float16 and abs(final_nmse_db(mixed) - fp32) < 1.0 and fp32 < encoder - 15
    assert final_nmse_db(pure) > encoder - 3  # the all-fp16 state barely moves from the encoder's answer


# --- the schedules reproduce the official code's values (paper-notes section 2.3) -------------------------------

@pytest.mark.parametrize("steps, warmup, tail_from, lr_min", [
    (20, 2, 16, 0.0017861), (50, 5, 40, 0.0014033), (100, 10, 80, 0.0012843), (200, 10, 80, 0.0012843)])
def test_paper_schedule_values(steps, warmup, tail_from, lr_min):
    lr = [0.01 * paper_schedule(steps)(i) for i in range(steps)]
    assert lr[0] == pytest.approx(0.01 / warmup) and lr[warmup - 1] == pytest.approx(0.01)
    assert lr[tail_from - 1] == pytest.approx(lr_min, abs=5e-8)
    assert all(v == lr[tail_from - 1] for v in lr[tail_from:])
    assert lr[tail_from - 2] > lr_min


def test_paper_schedule_without_cap_uses_whole_run():
    assert paper_schedule(200, cap=None)(100) > paper_schedule(200)(100)


def test_warmup_cosine_schedule():
    f = warmup_cosine_schedule(100)
    assert f(0) == 0 and f(5) == 0.5 and f(10) == 1 and f(100) == pytest.approx(0)


def test_adam_lr_in_trace_follows_schedule(linear):
    x, _ = linear.problem()
    result = decinv.invert(x, linear, "gradfree-adam", 20, progress=False)
    expected = [0.01 * paper_schedule(20)(i) for i in range(20)]
    assert np.allclose(result.trace.lr, expected)
    fixed = decinv.invert(x, linear, "gradfree-adam", 20, schedule=None, progress=False)
    assert np.allclose(fixed.trace.lr, 0.01)


# --- every method on a real (random) AutoencoderKL -------------------------------------------------------------

METHODS = [("encoder", 0, {}), ("forward-step", 4, {"step_size": 0.1}), ("inertial-km", 4, {"step_size": 0.1}),
           ("gradfree-adam", 4, {}), ("gradient-adam", 4, {}), ("anderson", 4, {"step_size": 0.1})]


@pytest.fixture(scope="module")
def vae_model():
    return decinv.load_model(small_vae(), device="cpu")


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(3)
    return torch.rand(4, 3, 16, 16) * 2 - 1


@pytest.mark.parametrize("method, steps, options", METHODS)
def test_method_on_autoencoder(vae_model, images, method, steps, options):
    z_true = vae_model.encode(images) + 0.01
    run = lambda **kw: decinv.invert(images, vae_model, method, steps, z_true=z_true, progress=False, **options, **kw)
    result = run()
    assert result.z.shape == (4, 4, 4, 4) and torch.isfinite(result.z).all()
    assert len(result.trace) == steps and result.trace.residual.shape == (steps, 4)
    assert result.status == "completed" and result.seconds > 0 and result.dtype == torch.float32
    assert torch.equal(run().z, result.z)  # deterministic
    chunked = run(chunk_size=3)
    assert torch.allclose(chunked.z, result.z, atol=1e-5)


@pytest.mark.parametrize("method, steps, options", METHODS)
def test_method_on_video_keeps_frame_axis(vae_model, images, method, steps, options):
    video = images.reshape(2, 2, 3, 16, 16)
    result = decinv.invert(video, vae_model, method, steps, chunk_size=1, progress=False, **options)
    assert result.z.shape == (2, 2, 4, 4, 4)


@pytest.mark.parametrize("method", ["gradfree-adam", "gradient-adam"])
def test_bf16_runs_finite(images, method):
    model = decinv.load_model(small_vae(), device="cpu", dtype=torch.bfloat16)
    result = decinv.invert(images[:1], model, method, 2, progress=False)
    assert result.dtype == torch.bfloat16 and result.z.dtype == torch.bfloat16
    assert torch.isfinite(result.z.float()).all() and not result.failed


# --- bad input: clear errors before any work ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(method="newton"), ValueError, "unknown method"),
    (dict(method="gradfree-adam", steps=-1), ValueError, "non-negative"),
    (dict(method="encoder", steps=5), ValueError, "no iterations"),
    (dict(method="forward-step", lr=0.1), TypeError, "step_size"),
    (dict(method="gradfree-adam", schedule="linear"), ValueError, "schedule"),
    (dict(method="gradfree-adam", chunk_size=0), ValueError, "chunk_size"),
])
def test_bad_arguments(vae_model, images, kwargs, error, match):
    with pytest.raises(error, match=match):
        decinv.invert(images, vae_model, progress=False, **kwargs)


def test_bad_z_true_shape(vae_model, images):
    with pytest.raises(ValueError, match="z_true"):
        decinv.invert(images, vae_model, "gradfree-adam", 1, z_true=torch.zeros(3, 4, 4, 4), progress=False)


# --- the public operator T ----------------------------------------------------------------------------------------

def test_operator_is_the_T_every_gradient_free_solver_iterates():
    """decinv.operator(model, x): T.e = E(x), T(z) = E(D(z)) - E(x); ten forward steps written by hand with it give
    invert's forward-step iterate and residuals exactly (the solvers receive the same object)."""
    model = decinv.load_model(small_vae(), device="cpu")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    T = decinv.operator(model, x)
    assert torch.equal(T.e, model.encode(x))
    assert torch.allclose(T(T.e), model.encode(model.decode(T.e), check=False) - T.e)
    z, residuals = T.e.clone(), []
    for _ in range(10):
        t = T(z)
        residuals.append(t.flatten(1).norm(dim=1))
        z = z - 0.05 * t
    result = decinv.invert(x, model, "forward-step", 10, step_size=0.05, progress=False)
    assert torch.equal(z, result.z)
    assert np.allclose(torch.stack(residuals).numpy(), result.trace.residual)
    assert torch.allclose(decinv.operator(model, x, chunk_size=1)(z), T(z), atol=1e-6)  # batch 1 vs 2: rounding


@pytest.mark.parametrize("bad, error, words", [
    (lambda x: x * 255, ValueError, "[-1, 1]"), (lambda x: x[0], ValueError, "x[None]"),
    (lambda x: x.numpy(), TypeError, "torch.Tensor"), (lambda x: x[..., :15], ValueError, "divisible")])
def test_operator_checks_its_images_as_invert_does(bad, error, words):
    model = decinv.load_model(small_vae(), device="cpu")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        decinv.operator(model, bad(x))
    with pytest.raises(TypeError, match="LatentModel"):
        decinv.operator(model.vae, x)
    with pytest.raises(ValueError, match="chunk_size"):
        decinv.operator(model, x, chunk_size=0)
