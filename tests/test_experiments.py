import pytest
import torch

import decinv
from decinv.generation.experiments import PROFILES, camera_pan, get_profile, load_profile, quantize_8bit, real_instances
from tests.conftest import small_vae


def test_quantize_8bit_has_256_levels_and_is_idempotent():
    x = torch.linspace(-1.2, 1.2, 10_000).reshape(1, 1, 100, 100)
    q = quantize_8bit(x)
    assert q.unique().numel() == 256 and torch.equal(quantize_8bit(q), q)
    assert (q - x.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6


def test_profiles_and_unknown_profile():
    assert get_profile("sd14-video").frames == 16 and PROFILES["sd21"].height == 512
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("sdxl")


def test_bundled_profiles_are_at_their_models_native_size():
    assert (PROFILES["tiny"].height, PROFILES["tiny-v2"].height, PROFILES["tiny-v1"].height) == (128, 128, 64)
    for name in ("tiny", "tiny-v1"):
        model, pipeline, profile = load_profile(name, device="cpu")
        assert pipeline is not None and model.vae.config.sample_size == profile.height == profile.width
        assert pipeline.unet.config.sample_size * model.downsample == profile.height


def test_real_instances_are_exact_decoder_images():
    model = decinv.load_model(small_vae(), device="cpu")
    inst = real_instances(model, 3, 16, 24, seed=0)
    assert inst.x.shape == (3, 3, 16, 24) and inst.z_true.shape == (3, 4, 4, 6)
    assert torch.allclose(inst.x, quantize_8bit(model.decode(inst.z_true)))


def test_camera_pan_frames_shift():
    model = decinv.load_model(small_vae(), device="cpu")
    clip = camera_pan(model, frames=3, height=16, width=16, step=4)
    assert clip.x.shape == (1, 3, 3, 16, 16) and clip.z_true.shape == (1, 3, 4, 4, 4)


def test_text_to_image_profiles_run_the_papers_protocol_or_fail():
    assert (PROFILES["sd21"].protocol, PROFILES["sd15"].protocol) == ("sd21", "instaflow")
    assert PROFILES["tiny"].protocol is None
    pytest.importorskip("transformers")
    from decinv.core.models import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match="hf download XCLiu/instaflow_0_9B_from_sd_1_5"):
        load_profile("sd15", "cpu", source="decinv-tests/no-such-pipeline")  # an error, not on-manifold crops
    with pytest.raises(ValueError, match="takes no source"):
        load_profile("tiny", "cpu", source="anything")


def test_tiny_ldm_generates_and_inverts_with_the_ddim_functions():
    from decinv.generation.diffusion import ddim_invert, ddim_sample
    from decinv.generation.experiments import TinyLDM, generated_instances, load_profile, quantize_8bit

    model, pipe, _ = load_profile("tiny", "cpu")
    ldm = TinyLDM.from_pipeline(pipe, steps=3)
    assert ldm.latent_shape == (4, 16, 16)
    z_T = torch.randn(2, *ldm.latent_shape, generator=torch.Generator().manual_seed(0))
    x, z0 = ldm.generate(z_T, ["ignored", "prompts"])
    assert torch.equal(z0, ddim_sample(pipe.unet, pipe.scheduler, z_T, 3))
    assert torch.equal(x, quantize_8bit(model.decode(z0))) and x.shape == (2, 3, 128, 128)
    assert torch.equal(ldm.invert_diffusion(z0), ddim_invert(pipe.unet, pipe.scheduler, z0, 3))
    inst = generated_instances(model, pipe, 2, seed=0, ddim_steps=3)
    assert torch.equal(inst.z_true, z0) and torch.equal(inst.x, x)  # the same noise, the same path
