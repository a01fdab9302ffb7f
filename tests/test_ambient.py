"""Global torch state a caller can leave on (decinv.core.ambient): every entry point that runs a network gives the result it
gives without it, or says what it changed. Each test compares against a reference computed in the default state,
bit for bit unless stated otherwise (issue 24, item 1)."""

import contextlib
import warnings

import pytest
import torch
from diffusers import DDIMScheduler

import decinv
from decinv.core import ambient
from decinv.applications import editing
from decinv.core.ambient import AmbientStateWarning
from decinv.generation.diffusion import ddim_invert, ddim_sample
from tests.autoencoder_zoo import tiny_kl
from tests.conftest import small_unet
from tests.test_diffusion import SCHED_CONFIG

RUNS = [("encoder", 0, {}), ("forward-step", 2, {"step_size": 0.1}), ("inertial-km", 2, {"step_size": 0.1}),
        ("gradfree-adam", 2, {}), ("gradient-adam", 2, {}), ("anderson", 2, {"step_size": 0.1})]


@pytest.fixture(scope="module")
def model():
    return decinv.load_model(tiny_kl(), device="cpu")


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture(scope="module")
def reference(model, x):
    """Every method's result in the default torch state."""
    return {m: decinv.invert(x, model, m, steps, progress=False, **opts).z for m, steps, opts in RUNS}


def run(model, x, method):
    steps, opts = next((s, o) for m, s, o in RUNS if m == method)
    return decinv.invert(x, model, method, steps, progress=False, **opts)


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def deterministic():
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


def params_and_flags(module):
    return ([p.detach().clone() for p in module.parameters()], [m.training for m in module.modules()],
            [p.requires_grad for p in module.parameters()])


def same_module_state(module, before):
    params, training, trainable = params_and_flags(module)
    return (all(torch.equal(a, b) for a, b in zip(params, before[0])) and training == before[1]
            and trainable == before[2] and all(p.grad is None for p in module.parameters()))


# --- autocast: the reported case ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cast", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", [m for m, _, _ in RUNS])
def test_invert_under_cpu_autocast_gives_the_float32_result_and_says_so(model, x, reference, method, cast):
    with torch.autocast("cpu", dtype=cast), pytest.warns(AmbientStateWarning) as caught:
        result = run(model, x, method)
    assert result.z.dtype == torch.float32 and result.dtype == torch.float32 and result.precision == "float32"
    assert torch.equal(result.z, reference[method])  # before the fix: bf16 latents, off by up to 0.33
    message = str(caught[0].message)
    assert "autocast('cpu')" in message and str(cast).replace("torch.", "") in message and "dtype=" in message


def test_encode_and_decode_under_autocast_run_in_the_models_dtype(model, x):
    e = model.encode(x)
    d = model.decode(e)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.warns(AmbientStateWarning, match="LatentModel.encode"):
        e_cast = model.encode(x)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.warns(AmbientStateWarning, match="LatentModel.decode"):
        d_cast = model.decode(e)
    assert torch.equal(e, e_cast) and torch.equal(d, d_cast)


def test_a_bfloat16_model_is_run_in_bfloat16_on_purpose(x):
    """What the warning recommends: load the model in the dtype wanted; the result records it."""
    model16 = decinv.load_model(tiny_kl(), device="cpu", dtype=torch.bfloat16)
    result = decinv.invert(x, model16, "forward-step", 1, progress=False)
    assert result.z.dtype == result.dtype == torch.bfloat16 and result.precision == "bfloat16"


def test_ddim_and_editing_under_autocast_run_the_unet_in_its_dtype():
    unet, scheduler = small_unet(), DDIMScheduler(**SCHED_CONFIG)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = ddim_sample(unet, scheduler, z, 4), ddim_invert(unet, scheduler, z, 4)
    traj = editing.sample_trajectory(unet, scheduler, z, 4)
    mask = editing.box_mask(8)
    ref_edit = editing.blended_edit(unet, scheduler, traj, mask, z.flip(0))
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ddim_sample(unet, scheduler, z, 4), ddim_invert(unet, scheduler, z, 4)
        traj_cast = editing.sample_trajectory(unet, scheduler, z, 4)
        edit = editing.blended_edit(unet, scheduler, traj_cast, mask, z.flip(0))
        inv = editing.inversion_trajectory(unet, scheduler, z, 4)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])  # before: off by 0.05 and 0.01
    assert torch.equal(traj_cast.latents, traj.latents) and torch.equal(edit, ref_edit)
    assert torch.equal(inv.z_T, ref[1])
    said = {str(w.message).split(" ran in")[0] for w in caught if w.category is AmbientStateWarning}
    assert said == {"ddim_sample", "ddim_invert", "sample_trajectory", "blended_edit", "inversion_trajectory"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA autocast needs a GPU")
@pytest.mark.parametrize("cast", [torch.float16, torch.bfloat16])
def test_cuda_autocast_on_a_cuda_model(x, cast):
    model = decinv.load_model(tiny_kl(), device="cuda")
    ref = decinv.invert(x, model, "gradfree-adam", 2, progress=False).z
    with torch.autocast("cuda", dtype=cast), pytest.warns(AmbientStateWarning, match="autocast\\('cuda'\\)"):
        out = decinv.invert(x, model, "gradfree-adam", 2, progress=False)
    assert out.z.dtype == torch.float32 and torch.equal(out.z, ref)


def test_an_autocast_region_of_another_device_type_is_left_alone():
    """A CPU autocast region does not touch CUDA tensors, so a CUDA computation has nothing to undo or say."""
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("error", AmbientStateWarning)
        assert ambient.autocast_dtype("cuda") is None and ambient.autocast_dtype("cpu") == torch.bfloat16
        with ambient.own_precision("cuda", torch.float32, "a CUDA call", "cast it"):
            assert torch.is_autocast_enabled("cpu")  # the CPU region is untouched too


# --- autograd modes, anomaly detection ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("method", [m for m, _, _ in RUNS])
def test_no_grad_and_inference_mode(model, x, reference, method, mode):
    with mode():
        x_here = x.clone()  # an inference tensor under inference_mode
        result = run(model, x_here, method)  # before the fix: gradient-adam raised inside autograd
    assert torch.equal(result.z, reference[method])


def test_decode_with_grad_builds_its_graph_inside_inference_mode(model, x):
    z = model.encode(x).requires_grad_(True)
    with torch.inference_mode():
        out = model.decode(z, grad=True)
    out.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_anomaly_mode_keeps_a_16_bit_overflow_a_status_not_an_exception(x):
    """A decoder whose first GroupNorm sees a tiny input: its backward amplifies by ~1e6, which overflows float16.
    Without anomaly mode the run reports it in its status; with anomaly mode it used to raise
    "Function 'ConvolutionBackward0' returned nan values" from inside autograd."""
    vae = tiny_kl()
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(1e-6)
        vae.decoder.conv_in.bias.mul_(1e-6)
    model16 = decinv.load_model(vae, device="cpu", dtype=torch.float16)
    plain = decinv.invert(x, model16, "gradient-adam", 2, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "Anomaly Detection has been enabled"
        with torch.autograd.set_detect_anomaly(True):
            anomalous = decinv.invert(x, model16, "gradient-adam", 2, progress=False)
    assert plain.failed and "non-finite" in plain.status
    assert anomalous.status == plain.status and torch.equal(anomalous.z, plain.z)
    assert torch.isfinite(anomalous.z).all()


def test_anomaly_mode_otherwise_changes_nothing(model, x, reference):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with torch.autograd.set_detect_anomaly(True):
            result = run(model, x, "gradient-adam")
    assert torch.equal(result.z, reference["gradient-adam"])


# --- default dtype, deterministic algorithms, matmul precision ---------------------------------------------------

@pytest.mark.parametrize("method", [m for m, _, _ in RUNS])
def test_default_dtype_float64_changes_no_inversion(model, x, reference, method):
    with default_dtype(torch.float64):
        result = run(model, x, method)
    assert result.z.dtype == torch.float32 and torch.equal(result.z, reference[method])


def test_default_dtype_float64_does_not_make_loaded_models_float64(tmp_path):
    tiny_kl().save_pretrained(tmp_path / "vae")
    with default_dtype(torch.float64):
        loaded = decinv.load_model(tmp_path / "vae", device="cpu")  # before: float64, silently
        asked = decinv.load_model(tmp_path / "vae", device="cpu", dtype=torch.float64)
    assert loaded.dtype == torch.float32 and next(loaded.vae.parameters()).dtype == torch.float32
    assert asked.dtype == torch.float64


def test_default_dtype_float64_draws_the_same_noise_for_generated_instances(model):
    """`generated_instances` drew z_T with torch.randn in the default dtype: other numbers under float64."""
    from decinv.generation.experiments import generated_instances
    from decinv.core.models import TinyPipeline

    pipeline = TinyPipeline(vae=model, unet=small_unet(), scheduler=DDIMScheduler(**SCHED_CONFIG))
    pipeline.unet.config.sample_size  # 8: latents 4x8x8 and images 16x16 for the x2 model
    ref = generated_instances(model, pipeline, 2, ddim_steps=2)
    with default_dtype(torch.float64):
        again = generated_instances(model, pipeline, 2, ddim_steps=2)
    assert torch.equal(again.z_true, ref.z_true) and torch.equal(again.x, ref.x)
    with default_dtype(torch.float64):
        assert editing.box_mask(8).dtype == torch.float32


@pytest.mark.parametrize("method", ["gradfree-adam", "gradient-adam", "anderson"])
def test_deterministic_algorithms_on_the_cpu(model, x, reference, method):
    with deterministic():
        assert torch.equal(run(model, x, method).z, reference[method])
        assert torch.equal(ddim_sample(small_unet(), DDIMScheduler(**SCHED_CONFIG), torch.ones(1, 4, 8, 8), 2),
                           ddim_sample(small_unet(), DDIMScheduler(**SCHED_CONFIG), torch.ones(1, 4, 8, 8), 2))


def test_deterministic_algorithms_on_cuda_need_cublas_configured(monkeypatch):
    """Checked from the flags alone, so it runs without a GPU: the refusal names the variable and the alternative."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    ambient.check_deterministic("cuda")  # off: nothing to refuse
    with deterministic():
        ambient.check_deterministic("cpu")
        with pytest.raises(RuntimeError, match="CUBLAS_WORKSPACE_CONFIG=:4096:8.*warn_only=True"):
            ambient.check_deterministic("cuda")
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        ambient.check_deterministic("cuda")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
        ambient.check_deterministic("cuda")  # warn-only: torch itself only warns
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_deterministic_algorithms_on_cuda_with_cublas_configured(monkeypatch, x):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    model = decinv.load_model(tiny_kl(), device="cuda")
    with deterministic():
        a = decinv.invert(x, model, "gradient-adam", 2, progress=False).z
        b = decinv.invert(x, model, "gradient-adam", 2, progress=False).z
    assert torch.equal(a, b)


def test_reduced_matmul_precision_is_recorded(model, x):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        result = run(model, x, "forward-step")
    finally:
        torch.set_float32_matmul_precision(old)
    assert result.dtype == torch.float32 and "'medium'" in result.precision
    assert "set_float32_matmul_precision" in result.precision and "'medium'" in repr(result)
    assert ambient.precision("cpu", torch.float32) == "float32"


def test_tf32_is_recorded_on_cuda_precision_strings():
    """The string for CUDA follows torch's TF32 switches (read even without a GPU)."""
    old = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert "TF32 convolutions" in ambient.precision("cuda", torch.float32)
        torch.backends.cudnn.allow_tf32 = False
        assert "TF32" not in ambient.precision("cuda", torch.float32)
        assert ambient.precision("cuda", torch.float16) == "float16"
    finally:
        torch.backends.cudnn.allow_tf32 = old


# --- the model's own state: train mode, trainable weights, a cast behind the wrapper's back ------------------------

@pytest.mark.parametrize("method", [m for m, _, _ in RUNS])
def test_a_model_left_in_train_mode_is_evaluated_in_eval_mode_and_put_back(model, x, reference, method):
    model.vae.train()
    try:
        before = params_and_flags(model.vae)
        result = run(model, x, method)  # before the fix: off by up to 2e-6 (diffusers' attention in train mode)
        assert same_module_state(model.vae, before)
    finally:
        model.vae.eval()
    assert torch.equal(result.z, reference[method])


def test_train_mode_with_dropout_warns_and_is_undone():
    """A UNet with dropout: in train mode DDIM would be random; decinv samples in eval mode and says so."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=8, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       dropout=0.5)
    scheduler, z = DDIMScheduler(**SCHED_CONFIG), torch.randn(1, 4, 8, 8)
    ref = ddim_sample(unet.eval(), scheduler, z, 3)
    unet.train()
    with pytest.warns(AmbientStateWarning, match="train mode.*Dropout"):
        out = ddim_sample(unet, scheduler, z, 3)
    assert torch.equal(out, ref) and unet.training and all(m.training for m in unet.modules())


@pytest.mark.parametrize("method", [m for m, _, _ in RUNS])
def test_weights_that_require_grad_get_no_grad_and_stay_trainable(model, x, reference, method):
    model.vae.requires_grad_(True)
    try:
        before = params_and_flags(model.vae)
        result = run(model, x, method)
        assert same_module_state(model.vae, before)  # before the fix: gradient-adam wrote .grad into the weights
    finally:
        model.vae.requires_grad_(False)
    assert torch.equal(result.z, reference[method])


def test_images_that_require_grad_get_no_grad(model, x, reference):
    x_in = x.clone().requires_grad_(True)
    result = run(model, x_in, "gradient-adam")
    assert x_in.grad is None and torch.equal(x_in.detach(), x) and not result.z.requires_grad
    assert torch.equal(result.z, reference["gradient-adam"])


def test_a_vae_cast_behind_the_wrappers_back_is_followed_and_recorded(x):
    model = decinv.load_model(tiny_kl(), device="cpu")
    model.vae.to(torch.bfloat16)  # not model.to(...): before the fix a dtype-mismatch error from inside conv2d
    result = decinv.invert(x, model, "forward-step", 1, progress=False)
    assert model.dtype == torch.bfloat16 and result.dtype == torch.bfloat16 and result.z.dtype == torch.bfloat16
    assert result.precision == "bfloat16" and torch.isfinite(result.z.float()).all()


# --- the real pipelines' protocols (tiny random pipelines of the real classes) ------------------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    pytest.importorskip("transformers")
    from decinv.generation.experiments import load_profile
    from tests import tiny_pipelines

    folder = tiny_pipelines.build(tmp_path_factory.mktemp("ambient_t2i")) / "pipe"
    return folder, load_profile("sd21", "cpu", source=folder)[1].with_protocol(steps=3)


def test_watermark_protocol_under_autocast_train_mode_and_trainable_weights(pipeline):
    from decinv.applications import watermark_pipelines as wp

    folder, sd21 = pipeline
    z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    x, z0 = wp.generate_watermarked(sd21, z_T, "a red cat")
    z_hat = wp.ddim_invert_guided(sd21, z0, ["a red cat"])
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.warns(AmbientStateWarning) as caught:
        x2, z02 = wp.generate_watermarked(sd21, z_T, "a red cat")
        z_hat2 = wp.ddim_invert_guided(sd21, z0, ["a red cat"])
    assert torch.equal(x2, x) and torch.equal(z02, z0) and torch.equal(z_hat2, z_hat)
    said = {str(w.message).split(" ran in")[0] for w in caught if w.category is AmbientStateWarning}
    assert said == {"TextToImage.generate", "ddim_invert_guided"}
    pipe = sd21.pipe
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.train().requires_grad_(True)
    try:
        x3, z03 = wp.generate_watermarked(sd21, z_T, "a red cat")
        assert all(m.training for m in pipe.unet.modules()) and all(p.requires_grad for p in pipe.unet.parameters())
    finally:
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.eval().requires_grad_(False)
    assert torch.equal(z03, z0) and torch.equal(x3, x)


def test_pipelines_load_in_float32_whatever_the_default_dtype(pipeline):
    from decinv.generation.experiments import load_profile

    folder, _ = pipeline
    with default_dtype(torch.float64):
        model, sd21, _ = load_profile("sd21", "cpu", source=folder)  # before: every network in float64
    assert model.dtype == torch.float32 and sd21.pipe.unet.dtype == torch.float32
    assert sd21.pipe.text_encoder.dtype == torch.float32


def test_a_bad_chunk_size_on_the_model_is_refused_by_decinv(x):
    """model.chunk_size = -1 used to reach torch's split() and fail there; 0 was taken as None."""
    model = decinv.load_model(tiny_kl(), device="cpu")
    for bad in (-1, 0, 1.5):
        model.chunk_size = bad
        with pytest.raises(ValueError, match="chunk_size"):
            decinv.invert(x, model, "forward-step", 1, progress=False)
        with pytest.raises(ValueError, match="chunk_size"):
            model.encode(x)
    model.chunk_size = 1
    assert torch.allclose(model.encode(x), decinv.load_model(tiny_kl(), device="cpu").encode(x), atol=1e-6)


def test_the_flat_walk_finds_what_modules_and_parameters_find():
    """`evaluating` walks the module tree itself (the nested generators of Module.modules() cost ~0.8 ms per E/D
    call); it must find exactly the train-mode submodules and trainable parameters torch's own methods find, with
    a shared submodule and a shared parameter counted once."""
    from decinv.core.ambient import _train_state

    shared = torch.nn.Dropout(0.1)
    inner = torch.nn.Sequential(torch.nn.Linear(2, 2), shared, torch.nn.Sequential(torch.nn.BatchNorm1d(2), shared))
    root = torch.nn.ModuleDict({"a": inner, "b": torch.nn.Linear(2, 2), "c": inner})
    root.b.weight = inner[0].weight  # a shared parameter
    root.eval()
    inner[2].train()
    root.b.bias.requires_grad_(False)
    training, trainable = _train_state([root])
    assert {id(m) for m in training} == {id(m) for m in root.modules() if m.training} and len(training) == 3
    assert [id(p) for p in trainable] and sorted(id(p) for p in trainable) == \
        sorted(id(p) for p in root.parameters() if p.requires_grad)
