"""The paper's generation protocols (decinv.generation.pipelines) end to end on tiny *random* text-to-image/video pipelines.

The pipelines are built from the real models' classes (UNet2DConditionModel, CLIPTextModel, CLIPTokenizer over a
small vocabulary written here, AutoencoderKL, the paper's scheduler), saved with save_pretrained, and loaded back
through `decinv.generation.experiments.load_profile(..., source=folder)`: the same code path as the hub models, offline.
Geometry: 16x16 images, 4x8x8 latents (a x2 VAE), CLIP width 32; the video stand-in adds a random MotionAdapter.
"""

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers", reason="the text-to-image pipelines need transformers (pip install -e .[test])")

import decinv  # noqa: E402
from decinv.generation.experiments import make_instances, load_profile  # noqa: E402
from decinv.core.models import ModelNotAvailableError  # noqa: E402
from decinv.generation.pipelines import (PROTOCOLS, PromptsNotAvailableError, TextToImage, TextToVideo,  # noqa: E402
                              load_prompts, load_text_to_image, paper_scheduler, pil_to_tensor)
from tests import tiny_pipelines  # noqa: E402
from tests.tiny_pipelines import write_clip_tokenizer  # noqa: E402,F401  (kept importable from here)

PROFILE = {"sd21": "sd21", "instaflow": "sd15"}  # protocol -> the experiments profile that uses it
PROMPTS = tiny_pipelines.PROMPTS


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A random SD-architecture pipeline saved as StableDiffusionPipeline.save_pretrained writes it."""
    return tiny_pipelines.build(tmp_path_factory.mktemp("tiny_t2i"), PROMPTS)


def load(folder, protocol):
    model, pipeline, profile = load_profile(PROFILE[protocol], "cpu", source=folder / "pipe")
    assert isinstance(pipeline, TextToImage) and pipeline.protocol == PROTOCOLS[protocol]
    return model, pipeline


def text_embedding(pipeline, prompt):
    pipe = pipeline.pipe
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]


class UNetCalls:
    """Records every UNet forward: (latent batch, timestep, encoder_hidden_states)."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        self.calls.append((sample.shape[0], torch.as_tensor(t).flatten().clone(),
                           kwargs["encoder_hidden_states"].clone()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("protocol", ["sd21", "instaflow"])
def test_instances_shapes_prompts_seeds_and_8bit_image(tiny_folder, protocol):
    model, pipeline = load(tiny_folder, protocol)
    inst = make_instances(PROFILE[protocol], model, pipeline, 2, seed=5, prompts=tiny_folder / "prompts.txt")
    assert inst.x.shape == (2, 3, 16, 16) and inst.z_true.shape == (2, 4, 8, 8)
    assert inst.prompts == PROMPTS[:2] and inst.seeds == [5, 6]
    assert inst.x.dtype == inst.z_true.dtype == model.dtype
    levels = (inst.x + 1) * 127.5
    assert (levels - levels.round()).abs().max() < 1e-4 and inst.x.min() >= -1 and inst.x.max() <= 1  # 8 bits
    for i, image in enumerate(pipeline.last_images):
        png = io.BytesIO()
        image.save(png, format="PNG")  # what the pipeline would save, reloaded
        png.seek(0)
        assert torch.equal(pil_to_tensor(Image.open(png)), inst.x[i])
    # z* is in decinv's latent convention: decinv's D(z*), post-processed as the pipeline does, is x exactly.
    decoded = model.decode(inst.z_true)
    again = pipeline.pipe.image_processor.postprocess(decoded, output_type="pil")
    assert torch.equal(torch.stack([pil_to_tensor(im) for im in again]), inst.x)
    # ... and the inversions run on that model as on any other.
    result = decinv.invert(inst.x, model, "encoder", z_true=inst.z_true, progress=False)
    assert result.z.shape == inst.z_true.shape


def test_sd21_x_is_the_pipelines_own_output(tiny_folder):
    """An independent plain StableDiffusionPipeline call (numpy output, no callback) gives the same 8-bit image."""
    model, pipeline = load(tiny_folder, "sd21")
    x, z, _ = pipeline.generate(PROMPTS[1], seed=7)
    out = pipeline.pipe(PROMPTS[1], num_inference_steps=50, guidance_scale=3.0, output_type="np",
                        generator=torch.Generator().manual_seed(7)).images[0]
    own = torch.from_numpy(np.round(out * 255).astype(np.uint8)).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.equal(own, x[0])
    latent = pipeline.pipe(PROMPTS[1], num_inference_steps=50, guidance_scale=3.0, output_type="latent",
                           generator=torch.Generator().manual_seed(7)).images
    assert torch.equal(latent, z)


@pytest.mark.parametrize("protocol", ["sd21", "instaflow"])
def test_seeds_reproduce_bit_for_bit_across_loads(tiny_folder, protocol):
    first = load(tiny_folder, protocol)[1].generate(PROMPTS[0], seed=3)
    second = load(tiny_folder, protocol)[1].generate(PROMPTS[0], seed=3)
    other = load(tiny_folder, protocol)[1].generate(PROMPTS[0], seed=4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_sd21_prompt_and_guidance_reach_the_unet(tiny_folder):
    _, pipeline = load(tiny_folder, "sd21")
    with UNetCalls(pipeline.pipe.unet) as rec:
        pipeline.generate(PROMPTS[1], seed=0)
    assert len(rec.calls) == 50  # the paper's 50 steps, one UNet call each (first order)
    cond, uncond = text_embedding(pipeline, PROMPTS[1]), text_embedding(pipeline, "")
    for batch, _, states in rec.calls:  # CFG doubles the batch: [unconditional, prompt]
        assert batch == 2 and torch.allclose(states[0], uncond[0]) and torch.allclose(states[1], cond[0])
    assert not torch.allclose(cond, uncond)
    # The guidance scale enters the update: one step by hand, eps = eps_u + 3 (eps_c - eps_u), then DDIM.
    one = pipeline.with_protocol(steps=1)
    _, z, _ = one.generate(PROMPTS[1], seed=0)

    def one_step(eps):  # a fresh scheduler each time: DPM-Solver keeps a step index
        sched = paper_scheduler()
        sched.set_timesteps(1)
        return sched.step(eps, sched.timesteps[0], z_T).prev_sample

    t = one.pipe.scheduler.timesteps[0]
    z_T = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    eps_u, eps_c = pipeline.pipe.unet(torch.cat([z_T, z_T]), t, encoder_hidden_states=torch.cat([uncond, cond])
                                      ).sample.chunk(2)
    assert torch.allclose(z, one_step(eps_u + 3.0 * (eps_c - eps_u)), atol=1e-5)
    plain = one_step(eps_c)
    assert not torch.allclose(z, plain, atol=1e-3)


def test_sd21_scheduler_is_the_papers():
    config = paper_scheduler().config
    assert (config.solver_order, config.beta_schedule, config.beta_start, config.beta_end) == \
        (1, "scaled_linear", 0.00085, 0.012)
    assert (config.num_train_timesteps, config.prediction_type, config.steps_offset) == (1000, "epsilon", 1)
    assert (PROTOCOLS["sd21"].steps, PROTOCOLS["sd21"].guidance_scale) == (50, 3.0)
    assert (PROTOCOLS["instaflow"].steps, PROTOCOLS["instaflow"].guidance_scale) == (1, 1.0)


def test_instaflow_is_one_euler_step_of_the_text_conditioned_velocity(tiny_folder):
    _, pipeline = load(tiny_folder, "instaflow")
    with UNetCalls(pipeline.pipe.unet) as rec:
        _, z, _ = pipeline.generate(PROMPTS[2], seed=1)
    cond, uncond = text_embedding(pipeline, PROMPTS[2]), text_embedding(pipeline, "")
    assert len(rec.calls) == 1
    batch, t, states = rec.calls[0]
    assert batch == 1 and torch.equal(t, torch.tensor([1000.0])) and torch.allclose(states, cond)  # CFG 1.0
    unet = pipeline.pipe.unet
    z_T = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    v_c = unet(z_T, torch.tensor([1000.0]), encoder_hidden_states=cond).sample
    assert torch.allclose(z, z_T + v_c, atol=1e-5)  # z* = z_T + dt v with dt = 1
    # Another prompt gives another latent (the prompt reaches the velocity field) ...
    assert not torch.allclose(pipeline.generate(PROMPTS[0], seed=1)[1], z, atol=1e-4)
    # ... and a guidance scale above 1 mixes the branches as v_u + w (v_c - v_u).
    v_u = unet(z_T, torch.tensor([1000.0]), encoder_hidden_states=uncond).sample
    guided = pipeline.with_protocol(guidance_scale=2.0).generate(PROMPTS[2], seed=1)[1]
    assert torch.allclose(guided, z_T + v_u + 2.0 * (v_c - v_u), atol=1e-5)
    # Two Euler steps: t = 1000 then 500, dt = 1/2 each.
    with UNetCalls(unet) as rec:
        pipeline.with_protocol(steps=2).generate(PROMPTS[2], seed=1)
    assert [float(c[1][0]) for c in rec.calls] == [1000.0, 500.0]


def test_prompts_file_list_environment_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DECINV_PROMPTS", raising=False)
    path = tmp_path / "p.txt"
    path.write_text("one\n\n two \nthree\n")
    assert load_prompts(2, path) == ["one", "two"] and load_prompts(3, ["a", "b", "c"]) == ["a", "b", "c"]
    with pytest.raises(PromptsNotAvailableError, match="holds only 3"):
        load_prompts(4, path)
    with pytest.raises(PromptsNotAvailableError, match="does not exist"):
        load_prompts(1, tmp_path / "missing.txt")
    monkeypatch.setenv("DECINV_PROMPTS", str(path))
    assert load_prompts(1) == ["one"]
    monkeypatch.delenv("DECINV_PROMPTS")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `datasets` were not installed
    with pytest.raises(PromptsNotAvailableError) as error:
        load_prompts(2)
    message = str(error.value)
    assert "Gustavosta/Stable-Diffusion-Prompts" in message and "pip install datasets" in message
    assert "prompts=PATH" in message and "DECINV_PROMPTS" in message


def test_missing_model_names_the_repo_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match=r"hf download stabilityai/stable-diffusion-2-1-base"):
        load_text_to_image("sd21", "decinv-tests/no-such-pipeline", device="cpu")
    with pytest.raises(ModelNotAvailableError, match="unet/, vae/, text_encoder/ and tokenizer/"):
        load_text_to_image("instaflow", tmp_path, device="cpu")
    with pytest.raises(ValueError, match="unknown protocol"):
        load_text_to_image("sdxl", tmp_path)


def test_make_instances_refuses_a_substitute(tiny_folder):
    model, pipeline = load(tiny_folder, "sd21")
    with pytest.raises(ValueError, match="text-to-image/video pipeline"):
        make_instances("sd21", model, None, 1, prompts=PROMPTS)
    with pytest.raises(ValueError, match="pipeline's own VAE"):
        make_instances("sd21", decinv.load_model(pipeline.pipe.vae, device="cpu"), pipeline, 1, prompts=PROMPTS)
    with pytest.raises(ValueError, match="no text conditioning"):
        make_instances("tiny", *load_profile("tiny", "cpu")[:2], 1, prompts=PROMPTS)


def load_video(folder, **changes):
    """The AnimateDiff protocol on the tiny pipeline: the protocol's 50 steps and CFG 7.5, 16x16 frames."""
    pipeline = load_text_to_image("animatediff", folder / "pipe", device="cpu")
    assert isinstance(pipeline, TextToVideo) and type(pipeline.pipe).__name__ == "AnimateDiffPipeline"
    return pipeline.with_protocol(height=None, width=None, **changes)  # the UNet's size instead of 320x512


def test_video_instances_shapes_seeds_and_8bit_frames(tiny_folder):
    pipeline = load_video(tiny_folder, frames=4)
    inst = pipeline.instances(2, seed=1, prompts=PROMPTS)
    assert inst.x.shape == (2, 4, 3, 16, 16) and inst.z_true.shape == (2, 4, 4, 8, 8) and inst.seeds == [1, 2]
    x, z, frames = pipeline.generate(PROMPTS[1], seed=2)
    assert torch.equal(x[0], inst.x[1]) and torch.equal(z[0], inst.z_true[1]) and len(frames) == 4  # bit for bit
    assert not torch.equal(pipeline.generate(PROMPTS[1], seed=3)[1], z)
    # decinv's frame-wise D(z*) post-processed like an image is the pipeline's 8-bit video ...
    model = pipeline.vae
    again = pipeline.pipe.video_processor.postprocess(model.decode(z[0]), output_type="pil")
    assert torch.equal(torch.stack([pil_to_tensor(im) for im in again]), x[0])
    # ... and so is an independent plain AnimateDiffPipeline call (numpy output, no callback).
    out = pipeline.pipe(PROMPTS[1], num_frames=4, num_inference_steps=50, guidance_scale=7.5, output_type="np",
                        generator=torch.Generator().manual_seed(2)).frames[0]
    own = torch.from_numpy(np.round(out * 255).astype(np.uint8)).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    assert torch.equal(own, x[0])
    result = decinv.invert(inst.x, model, "encoder", z_true=inst.z_true, progress=False)
    assert result.z.shape == inst.z_true.shape


def test_video_prompt_guidance_and_frames_reach_the_unet(tiny_folder):
    assert (PROTOCOLS["animatediff"].frames, PROTOCOLS["animatediff"].guidance_scale) == (16, 7.5)
    pipeline = load_video(tiny_folder, steps=2)
    with UNetCalls(pipeline.pipe.unet) as rec:
        x, z, _ = pipeline.generate(PROMPTS[0], seed=0)
    assert x.shape == (1, 16, 3, 16, 16) and z.shape == (1, 16, 4, 8, 8)
    cond, uncond = text_embedding(pipeline, PROMPTS[0]), text_embedding(pipeline, "")
    assert len(rec.calls) == 2
    for batch, _, states in rec.calls:  # CFG 7.5: [unconditional, prompt] clips, the embeddings repeated per frame
        assert batch == 2 and states.shape[0] == 2 * 16
        assert torch.allclose(states[:16], uncond.expand(16, -1, -1))
        assert torch.allclose(states[16:], cond.expand(16, -1, -1))
    unguided = pipeline.with_protocol(guidance_scale=1.0).generate(PROMPTS[0], seed=0)[1]
    assert not torch.allclose(unguided, z, atol=1e-4)
    assert not torch.allclose(pipeline.generate(PROMPTS[2], seed=0)[1], z, atol=1e-4)  # another prompt
