"""Every supported diffusers autoencoder class: loading by config class, the pipelines' latent conventions, the
issue-11 cases (TAESD folder, latent statistics, fp16 overflow, 16-bit PNG), video layout, and every method on
every class. All models are tiny random instances saved with save_pretrained and reloaded offline."""

import numpy as np
import pytest
import torch

import decinv
from decinv.core.autoencoders import SPECS, UnsupportedAutoencoderError
from decinv.core.models import NonFiniteLatentError
from decinv.core.solvers import METHODS
from decinv.core.solvers.tracking import Tracker
from tests.autoencoder_zoo import IMAGE, VIDEO, tiny_kl, tiny_ltx, tiny_taesd, tiny_wan

ALL = {**IMAGE, **VIDEO}


def reloaded(vae, tmp_path):
    vae.save_pretrained(tmp_path / type(vae).__name__)
    return decinv.load_model(tmp_path / type(vae).__name__, device="cpu")


def images(seed=0, batch=2, side=16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, side, side, generator=g) * 2 - 1


def video(seed=0, batch=1, frames=5, side=16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 3, side, side, generator=g) * 2 - 1


def raw_mode(vae, x):
    """The raw latent straight from diffusers (diffusers' layout), as a pipeline's retrieve_latents(argmax) gets it."""
    out = vae.encode(x)
    if hasattr(out, "latent_dist"):
        return out.latent_dist.mode()
    return out.latents if hasattr(out, "latents") else out.latent  # AutoencoderTiny / AutoencoderDC


def test_every_spec_has_a_test_instance():
    # TAESD is decinv's own module for the original .pth checkpoints, not a diffusers class: tests/test_taesd.py
    assert set(SPECS) - {"TAESD"} == set(ALL)


@pytest.mark.parametrize("name", list(ALL))
def test_folder_is_loaded_as_the_class_its_config_names(name, tmp_path):
    vae = ALL[name]()
    model = reloaded(vae, tmp_path)
    assert type(model.vae).__name__ == name
    x = video() if model.temporal else images()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), decinv.load_model(vae, device="cpu").encode(x), atol=1e-6)


def test_issue_case_1_taesd_folder(tmp_path):
    """Was: loaded as AutoencoderKL, 'num_channels (16) must be divisible by num_groups (32)'."""
    model = reloaded(tiny_taesd(), tmp_path)
    x = images()
    assert type(model.vae).__name__ == "AutoencoderTiny" and model.downsample == 2
    with torch.no_grad():
        expected = model.vae.encode(x).latents * model.vae.config.scaling_factor  # deterministic encoder
    assert torch.equal(model.encode(x), expected)


def test_unsupported_class_names_itself_and_the_supported_ones(tmp_path):
    from diffusers import VQModel

    torch.manual_seed(0)
    VQModel(block_out_channels=(8,), norm_num_groups=8, latent_channels=3).save_pretrained(tmp_path / "vq")
    with pytest.raises(UnsupportedAutoencoderError) as error:
        decinv.load_model(tmp_path / "vq")
    message = str(error.value)
    assert "VQModel" in message and all(name in message for name in SPECS)
    with pytest.raises(UnsupportedAutoencoderError, match="VQModel"):
        decinv.load_model(VQModel(block_out_channels=(8,), norm_num_groups=8, latent_channels=3))


def test_issue_case_2_latent_statistics_follow_sdxl(tmp_path):
    """(z - mean) * sf / std, stable_diffusion_xl/pipeline_stable_diffusion_xl_img2img.py:749; decoding undoes it
    as the SDXL pipeline's decode does (z * std / sf + mean, pipeline_stable_diffusion_xl.py:1285)."""
    mean, std = torch.tensor([0.5, -0.2, 0.1, 0.3]), torch.tensor([2.0, 1.5, 1.0, 0.5])
    vae = tiny_kl(latents_mean=tuple(mean.tolist()), latents_std=tuple(std.tolist()), scaling_factor=0.5)
    model, x = reloaded(vae, tmp_path), images()
    with torch.no_grad():
        mode = model.vae.encode(x).latent_dist.mode()
        expected = (mode - mean.view(1, 4, 1, 1)) * 0.5 / std.view(1, 4, 1, 1)
        z = model.encode(x)
        assert (z - mode * 0.5).abs().max() > 0.1  # the old z * sf would differ: the statistics matter here
        assert torch.allclose(z, expected, atol=1e-6)
        assert torch.allclose(model.decode(z), model.vae.decode(mode).sample, atol=1e-5)


def _pipeline_formula(name, vae, raw):
    """Each pipeline's normalisation written out independently (file:line in decinv.core.autoencoders' table)."""
    c = vae.config
    view = lambda t: torch.as_tensor(t, dtype=raw.dtype).view(1, -1, *([1] * (raw.dim() - 2)))
    if name == "AutoencoderKLWan":
        return (raw - view(c.latents_mean)) * (1.0 / view(c.latents_std))
    if name == "AutoencoderKLLTXVideo":
        return (raw - view(vae.latents_mean)) * c.scaling_factor / view(vae.latents_std)
    if name == "AutoencoderKLFlux2":
        n, ch, h, w = raw.shape
        p = raw.view(n, ch, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, ch * 4, h // 2, w // 2)
        return (p - view(vae.bn.running_mean)) / torch.sqrt(view(vae.bn.running_var) + c.batch_norm_eps)
    return (raw - (getattr(c, "shift_factor", None) or 0.0)) * c.scaling_factor


@pytest.mark.parametrize("name", list(ALL))
def test_each_convention_matches_its_pipeline_formula(name, tmp_path):
    model = reloaded(ALL[name](), tmp_path)
    x = video() if model.temporal else images()
    with torch.no_grad():
        raw = raw_mode(model.vae, x.transpose(1, 2) if model.temporal else x)
        expected = _pipeline_formula(name, model.vae, raw)
        z = model.encode(x)
        if model.temporal:
            expected = expected.transpose(1, 2)
        assert z.shape == expected.shape and torch.allclose(z, expected, atol=1e-5)
        assert torch.allclose(model.convention.denormalize(model.convention.normalize(raw)), raw, atol=1e-5)


def test_shift_factor_follows_sd3_and_flux(tmp_path):
    """(z - shift) * sf: stable_diffusion_3/pipeline_stable_diffusion_3_img2img.py:702."""
    model, x = reloaded(tiny_kl(shift_factor=0.2, scaling_factor=1.5), tmp_path), images()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), (model.vae.encode(x).latent_dist.mode() - 0.2) * 1.5, atol=1e-6)
    assert model.convention.kind == "shift-scale"


def _overflowing_vae():
    vae = tiny_kl(force_upcast=True)
    with torch.no_grad():  # the issue's case 3: first convolutions scaled by 3e5 overflow fp16 (max 65504)
        vae.encoder.conv_in.weight.mul_(3e5)
    return vae


def test_issue_case_3_fp16_overflow_raises_and_never_returns_nan(tmp_path):
    model = decinv.load_model(_overflowing_vae(), device="cpu", dtype=torch.float16)
    x = images()
    with pytest.raises(NonFiniteLatentError, match="force_upcast"):
        model.encode(x)
    for method in METHODS:  # every method, the encoder baseline included, refuses rather than returning NaN
        with pytest.raises(NonFiniteLatentError, match="upcast=True"):
            decinv.invert(x, model, method, 0 if method == "encoder" else 2, progress=False)


def test_issue_case_3_upcast_honours_force_upcast_like_the_pipelines():
    model = decinv.load_model(_overflowing_vae(), device="cpu", dtype=torch.float16, upcast=True)
    assert model.dtype == torch.float32 and model.upcast_from == torch.float16 and "force_upcast" in repr(model)
    result = decinv.invert(images(), model, "encoder", progress=False)
    assert result.status == "completed" and torch.isfinite(result.z).all() and result.dtype == torch.float32
    no_flag = decinv.load_model(tiny_kl(force_upcast=False), device="cpu", dtype=torch.float16, upcast=True)
    assert no_flag.dtype == torch.float16  # only a config that asks for it is upcast


def test_issue_case_4_16_bit_png_is_rescaled_not_clipped(tmp_path):
    from PIL import Image

    from decinv.cli import load_image

    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (16, 1))  # horizontal ramp, mode I;16
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    assert Image.open(tmp_path / "ramp16.png").mode == "I;16"
    x = load_image(tmp_path / "ramp16.png", None, 8)
    assert x.shape == (1, 3, 16, 64)
    expected = torch.from_numpy(ramp / 65535.0 * 2 - 1).float()
    assert torch.allclose(x[0, 1], expected, atol=1e-6) and abs(float(x.mean())) < 1e-3
    resized = load_image(tmp_path / "ramp16.png", 8, 8)  # the F-mode resize path
    assert resized.shape == (1, 3, 8, 8) and float(resized.min()) >= -1 and float(resized.max()) <= 1
    Image.fromarray(np.full((8, 8), 2.0, dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(SystemExit, match="outside"):
        load_image(tmp_path / "float.tiff", None, 8)


@pytest.mark.parametrize("name", list(VIDEO))
def test_video_layout_and_latent_frame_count(name, tmp_path):
    model = reloaded(VIDEO[name](), tmp_path)
    assert model.temporal and model.temporal_compression == 4
    for frames in (1, 5, 9):
        x = video(frames=frames)
        z = model.encode(x)
        assert z.shape == (1, model.latent_frames(frames), 4, 4, 4) and model.latent_frames(frames) == (frames - 1) // 4 + 1
        assert model.decode(z).shape == x.shape
    with pytest.raises(ValueError, match="4k \\+ 1 frames.*Use 5 or 9"):
        model.encode(video(frames=7))
    with pytest.raises(ValueError, match="one-frame video"):
        model.encode(images())
    two = torch.cat([video(0), video(1)])  # chunk_size counts whole videos: the same result, a video is never split
    assert torch.allclose(model.encode(two, chunk_size=1), model.encode(two), atol=1e-5)


def test_wan_decoder_clamps_and_ltx_decode_is_deterministic(tmp_path):
    wan = decinv.load_model(tiny_wan(), device="cpu")
    z = wan.encode(video()) * 50
    assert wan.decode(z).abs().max() <= 1.0  # the class's own clamp (documented quirk)
    ltx = decinv.load_model(tiny_ltx(timestep_conditioning=True, decoder_inject_noise=(True,) * 4), device="cpu")
    z = ltx.encode(video())
    assert torch.equal(ltx.decode(z), ltx.decode(z))  # no decode-time noise; injected noise is the same each call
    assert "timestep 0" in ltx.spec.quirks


def _steps(method):
    return 0 if method == "encoder" else 2


@pytest.mark.parametrize("name", list(IMAGE))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_on_every_image_class(name, method, tmp_path):
    model = reloaded(IMAGE[name](), tmp_path)
    result = decinv.invert(images(), model, method, _steps(method), progress=False)
    assert result.z.shape == model.encode(images()).shape and torch.isfinite(result.z).all()
    assert not result.failed and result.steps_run == _steps(method)


def _solve_whole_videos(x, model, method, steps):
    """What decinv.invert does, with one video (not one frame) per batch item: the solvers are unchanged."""
    tracker = Tracker(steps, len(x), method, model.device, residual_kind="latent", progress=False)
    with torch.no_grad():
        return METHODS[method](decinv.operator(model, x), tracker), tracker


@pytest.mark.parametrize("name", list(VIDEO))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_on_every_video_class(name, method, tmp_path):
    model = reloaded(VIDEO[name](), tmp_path)
    x = video()
    z, tracker = _solve_whole_videos(x, model, method, _steps(method))
    assert z.shape == (1, 2, 4, 4, 4) and torch.isfinite(z).all() and tracker.status == "completed"
    if method != "encoder":
        assert len(tracker.trace()) == _steps(method) and not torch.equal(z, model.encode(x))


@pytest.mark.parametrize("method", ["gradfree-adam", "anderson"])
def test_invert_drives_a_temporal_autoencoder_one_video_per_item(method):
    model = decinv.load_model(tiny_wan(), device="cpu")
    x = video()
    z_true = model.encode(x)
    result = decinv.invert(x, model, method, 2, z_true=z_true, progress=False)
    assert result.z.shape == z_true.shape == (1, 2, 4, 4, 4) and result.trace.nmse_db.shape == (2, 1)
    z, _ = _solve_whole_videos(x, model, method, 2)  # the same as driving the solver by hand
    assert torch.allclose(result.z, z, atol=1e-6)
    with pytest.raises(ValueError, match="video autoencoder"):
        decinv.invert(x[:, 0], model, method, 2, progress=False)
