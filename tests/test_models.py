"""Model I/O: local save_pretrained round trips, the latent convention, offline hub failures, input checks."""

import time

import pytest
import torch

import decinv
from decinv.core.models import LatentModel, ModelNotAvailableError
from tests.conftest import small_vae


@pytest.fixture(scope="module")
def model():
    return decinv.load_model(small_vae(), device="cpu")


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(2, 3, 16, 16) * 2 - 1


@pytest.mark.parametrize("layout, factor", [("tiny", 4), ("sd", 8)])
def test_save_pretrained_round_trip(tmp_path, layout, factor):
    vae = small_vae(layout)
    vae.save_pretrained(tmp_path / "bare")
    vae.save_pretrained(tmp_path / "pipeline" / "vae")  # a pipeline folder: the VAE sits in vae/
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    reference = decinv.load_model(vae, device="cpu").encode(x)
    for folder in ("bare", "pipeline"):
        loaded = decinv.load_model(tmp_path / folder, device="cpu")
        assert loaded.downsample == factor
        assert torch.allclose(loaded.encode(x), reference, atol=1e-6)


def test_latent_is_scaled_posterior_mode(model, x):
    mode = model.vae.encode(x).latent_dist.mode()
    assert torch.allclose(model.encode(x), mode * model.scaling_factor)
    assert torch.allclose(model.decode(model.encode(x)), model.vae.decode(mode).sample, atol=1e-4)


def test_video_frames_and_chunks(model, x):
    video = torch.stack([x, x.flip(-1)], dim=1)  # (B=2, F=2, 3, 16, 16)
    z = model.encode(video)
    assert z.shape == (2, 2, 4, 4, 4)
    assert torch.allclose(model.encode(video, chunk_size=3), z, atol=1e-6)
    assert model.decode(z, chunk_size=1).shape == video.shape


def test_decode_with_grad_reaches_only_the_latent(model, x):
    z = model.encode(x).requires_grad_(True)
    model.decode(z, grad=True).sum().backward()
    assert z.grad is not None and all(p.grad is None for p in model.vae.parameters())


def test_half_precision_on_cpu_uses_channels_last(x):
    half = decinv.load_model(small_vae(), device="cpu", dtype=torch.bfloat16)
    assert half.memory_format == torch.channels_last and half.dtype == torch.bfloat16
    assert torch.isfinite(half.decode(half.encode(x)).float()).all()


def test_unknown_hub_id_offline_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as error:
        decinv.load_model("nobody/no-such-vae-here")
    message = str(error.value)
    assert time.perf_counter() - start < 10
    assert "nobody/no-such-vae-here" in message and "HF_HUB_OFFLINE" in message and "tiny" in message


def test_preset_offline_names_the_repo(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="stabilityai/stable-diffusion-2-1-base"):
        decinv.load_model("sd21")


def test_folder_without_a_vae(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        decinv.load_model(tmp_path)


def test_wrong_source_type():
    with pytest.raises(TypeError, match="AutoencoderKL"):
        decinv.load_model(42)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(RuntimeError, match="no CUDA"):
        decinv.load_model(small_vae(), device="cuda")


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(3, 16, 16), "shape"),
    (torch.zeros(1, 4, 16, 16), "3 channels"),
    (torch.zeros(0, 3, 16, 16), "empty"),
    (torch.full((1, 3, 16, 16), 200.0), "0-255"),
    (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "x.float"),
    (torch.zeros(1, 3, 18, 16), "divisible"),
])
def test_bad_images_are_rejected_before_work(model, bad, match):
    with pytest.raises(ValueError, match=match):
        model.encode(bad)
    with pytest.raises(ValueError, match=match):
        decinv.invert(bad, model, "gradfree-adam", 1, progress=False)


def test_bad_latents_are_rejected(model):
    with pytest.raises(ValueError, match="4 channels"):
        model.decode(torch.zeros(1, 3, 4, 4))


def test_repr_is_informative(model):
    assert "0." in repr(model) and "x4" in repr(model) and isinstance(model, LatentModel)


def test_load_pipeline_takes_a_candidate_folder_written_by_the_training_script(tmp_path):
    import shutil

    from decinv.core.models import load_pipeline, tiny_dir

    for part in ("vae", "unet", "scheduler"):
        shutil.copytree(tiny_dir("tiny") / part, tmp_path / part)
    candidate, bundled = load_pipeline(str(tmp_path)), load_pipeline("tiny")
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(candidate.vae.decode(z), bundled.vae.decode(z))
    assert type(candidate.unet) is type(bundled.unet)
    with pytest.raises(ValueError, match="DIR/vae, DIR/unet"):
        load_pipeline(str(tmp_path / "unet"))
