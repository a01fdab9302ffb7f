"""Every profile with a generation protocol, end to end through `load_profile` + `make_instances` on tiny *random*
pipelines saved like the hub repos (tests/tiny_pipelines.py): the same code path as the real models, offline.
Also the chapter/profile table and the GPU time estimates of `scripts/book_chapters.py`."""

import math
import shutil
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the generating pipelines need transformers (pip install -e .[test])")

import decinv  # noqa: E402
from scripts import book_chapters as chapters  # noqa: E402
from decinv.generation.experiments import PROFILES, Instances, load_profile, make_instances  # noqa: E402
from decinv.core.models import ModelNotAvailableError  # noqa: E402
from decinv.generation.pipelines import PROTOCOLS, TextToVideo, paper_scheduler, pil_to_tensor  # noqa: E402
from tests import tiny_pipelines  # noqa: E402
from tests.tiny_pipelines import PROMPTS, SMALL  # noqa: E402

WITH_PROTOCOL = [name for name, p in PROFILES.items() if p.protocol]
VIDEO = {"steps": 3, "frames": 4, **SMALL}  # a few steps and frames at the tiny pipeline's 16x16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_pipelines.build(tmp_path_factory.mktemp("tiny_profiles"))


def video(folder, **changes):
    return load_profile("sd14-video", "cpu", source=folder / "pipe", generation={**VIDEO, **changes})


def test_every_hub_profile_has_a_protocol_and_the_video_one_is_animatediff():
    assert set(WITH_PROTOCOL) == {"sd21", "sd15", "sd14-video"}
    prof = PROFILES["sd14-video"]
    assert prof.protocol == "animatediff" and (prof.frames, prof.height, prof.width) == (16, 320, 512)
    p = PROTOCOLS["animatediff"]
    assert (p.frames, p.height, p.width, p.guidance_scale, p.steps) == (16, 320, 512, 7.5, 50)


@pytest.mark.parametrize("name", WITH_PROTOCOL)
def test_make_instances_end_to_end_for_every_profile(folder, name):
    generation = {"steps": 2, **({"frames": 2, **SMALL} if PROFILES[name].frames else {})}
    model, pipeline, prof = load_profile(name, "cpu", source=folder / "pipe", generation=generation)
    assert pipeline.protocol.name == prof.protocol and pipeline.vae is model
    inst = make_instances(name, model, pipeline, 2, seed=3, prompts=folder / "prompts.txt")
    lead = (2, 2) if prof.frames else (2,)
    assert inst.x.shape == (*lead, 3, 16, 16) and inst.z_true.shape == (*lead, 4, 8, 8)
    assert inst.prompts == PROMPTS[:2] and inst.seeds == [3, 4] and inst.is_video == bool(prof.frames)
    result = decinv.invert(inst.x, model, "gradfree-adam", 2, z_true=inst.z_true, progress=False)
    assert result.z.shape == inst.z_true.shape and np.isfinite(result.trace.nmse_db).all()
    flat = inst.frames()
    assert flat.x.shape == (int(np.prod(lead)), 3, 16, 16) and decinv.invert(
        flat.x, model, "encoder", progress=False).z.shape == flat.z_true.shape


def test_video_profile_shapes_seeds_and_the_pipelines_own_frames(folder):
    model, pipeline, _ = video(folder)
    assert isinstance(pipeline, TextToVideo) and type(pipeline.pipe).__name__ == "AnimateDiffPipeline"
    inst = make_instances("sd14-video", model, pipeline, 2, seed=1, prompts=folder / "prompts.txt")
    assert inst.x.shape == (2, 4, 3, 16, 16) and inst.z_true.shape == (2, 4, 4, 8, 8)
    assert inst.x.dtype == inst.z_true.dtype == model.dtype and inst.seeds == [1, 2]
    # seeds reproduce bit for bit, through a fresh load
    model2, pipeline2, _ = video(folder)
    again = make_instances("sd14-video", model2, pipeline2, 2, seed=1, prompts=folder / "prompts.txt")
    assert torch.equal(again.x, inst.x) and torch.equal(again.z_true, inst.z_true)
    assert not torch.equal(make_instances("sd14-video", model2, pipeline2, 1, seed=2, prompts=PROMPTS).z_true[0],
                           inst.z_true[0])
    # x is the 8-bit video a plain AnimateDiffPipeline call (no callback, numpy output) gives for that prompt/seed
    for i in range(2):
        out = pipeline.pipe(PROMPTS[i], num_frames=4, height=16, width=16, num_inference_steps=3,
                            guidance_scale=7.5, output_type="np",
                            generator=torch.Generator().manual_seed(1 + i)).frames[0]
        own = torch.from_numpy(np.round(out * 255).astype(np.uint8)).permute(0, 3, 1, 2).float() / 255 * 2 - 1
        assert torch.equal(own, inst.x[i])
    # z* decodes (decinv's frame-wise D) to x up to the 8-bit rounding: at most half a level, 1/255 in [-1, 1]
    decoded = model.decode(inst.z_true).clamp(-1, 1)
    assert (decoded - inst.x).abs().max() <= 1 / 255 + 1e-5
    assert torch.equal(torch.stack([pil_to_tensor(im) for im in pipeline.pipe.video_processor.postprocess(
        model.decode(inst.z_true[0]), output_type="pil")]), inst.x[0])


class UNetCalls:
    def __init__(self, unet):
        self.calls, self.handle = [], unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.calls.append((args[0] if args else kwargs["sample"]).clone())
        self.calls[-1] = (self.calls[-1], kwargs["encoder_hidden_states"].clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def embedding(pipe, prompt):
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]


def test_video_prompt_and_guidance_reach_the_unet(folder):
    model, pipeline, _ = video(folder, steps=1)
    pipe = pipeline.pipe
    with UNetCalls(pipe.unet) as rec:
        inst = make_instances("sd14-video", model, pipeline, 1, seed=0, prompts=[PROMPTS[1]])
    cond, uncond = embedding(pipe, PROMPTS[1]), embedding(pipe, "")
    assert len(rec.calls) == 1
    sample, states = rec.calls[0]
    assert sample.shape[0] == 2  # CFG 7.5: [unconditional, prompt] clips in one call
    assert torch.allclose(states[:4], uncond.expand(4, -1, -1)) and torch.allclose(states[4:], cond.expand(4, -1, -1))
    # The guidance scale enters the update: eps = eps_u + 7.5 (eps_c - eps_u), one first-order step, by hand.
    z_T = torch.randn((1, 4, 4, 8, 8), generator=torch.Generator().manual_seed(0))  # (B, C, F, h, w)
    sched = paper_scheduler()
    sched.set_timesteps(1)
    t = sched.timesteps[0]
    per_frame = torch.cat([uncond.expand(4, -1, -1), cond.expand(4, -1, -1)])  # as the pipeline passes them
    eps_u, eps_c = pipe.unet(torch.cat([z_T, z_T]), t, encoder_hidden_states=per_frame).sample.chunk(2)

    def step(eps):
        s = paper_scheduler()
        s.set_timesteps(1)
        return s.step(eps, t, z_T).prev_sample.permute(0, 2, 1, 3, 4)  # decinv's (B, F, C, h, w)

    assert torch.allclose(inst.z_true, step(eps_u + 7.5 * (eps_c - eps_u)), atol=1e-5)
    assert not torch.allclose(inst.z_true, step(eps_c), atol=1e-3)  # ... so a guidance scale of 1 would differ
    other = make_instances("sd14-video", model, pipeline, 1, seed=0, prompts=[PROMPTS[2]])
    assert not torch.allclose(other.z_true, inst.z_true, atol=1e-4)  # and the prompt changes the clip


@pytest.mark.parametrize("name", WITH_PROTOCOL)
def test_a_missing_model_names_the_repo_and_the_fix(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = PROTOCOLS[PROFILES[name].protocol].repo
    with pytest.raises(ModelNotAvailableError, match=f"hf download {repo}"):
        load_profile(name, "cpu", source="decinv-tests/no-such-pipeline")


def test_a_missing_motion_adapter_names_its_repo(folder, tmp_path):
    partial = tmp_path / "pipe"
    shutil.copytree(folder / "pipe", partial, ignore=shutil.ignore_patterns("motion_adapter"))
    with pytest.raises(ModelNotAvailableError, match=f"hf download {PROTOCOLS['animatediff'].adapter}"):
        load_profile("sd14-video", "cpu", source=partial)


def test_make_instances_refuses_another_profiles_pipeline_and_substitutes(folder):
    model, pipeline, _ = load_profile("sd21", "cpu", source=folder / "pipe")
    with pytest.raises(ValueError, match="'animatediff' protocol"):
        make_instances("sd14-video", model, pipeline, 1, prompts=PROMPTS)
    with pytest.raises(ValueError, match="text-to-image/video pipeline"):
        make_instances("sd14-video", model, None, 1, prompts=PROMPTS)
    with pytest.raises(ValueError, match="takes no generation"):
        load_profile("tiny", "cpu", generation={"steps": 2})
    with pytest.raises(ValueError, match="sampler"):
        make_instances("tiny", load_profile("tiny", "cpu")[0], None, 1)


def test_instances_frames_flattens_clips_in_order():
    x, z = torch.rand(2, 3, 3, 4, 4), torch.rand(2, 3, 4, 2, 2)
    flat = Instances(x, z, "clips", prompts=["a", "b"], seeds=[0, 1]).frames()
    assert torch.equal(flat.x[3:6], x[1]) and torch.equal(flat.z_true[:3], z[0])
    assert flat.prompts == ["a"] * 3 + ["b"] * 3 and flat.seeds == [0, 0, 0, 1, 1, 1] and not flat.is_video
    images = Instances(x[0], z[0], "images")
    assert images.frames() is images


# ------------------------------------------------------------------------------------------- chapters, estimates


def test_chapter_profile_table():
    for name in ("01_motivation", "02_cocoercivity", "03_fsm_km", "04_adam_scheduling", "07_anderson", "09_gpu"):
        assert all(chapters.can_run(name, p)[0] for p in PROFILES), name
    ok, why = chapters.can_run("05_watermark", "sd14-video")
    assert not ok and "video" in why and chapters.can_run("05_watermark", "sd21")[0]
    ok, why = chapters.can_run("06_editing", "sd21")
    assert not ok and "tiny" in why
    assert not chapters.can_run("benchmark", "sd21")[0]


def test_per_iteration_costs_are_the_slopes_of_table_s1():
    it = np.array([20, 50, 100, 200.0])
    secs = np.array([3.34, 8.53, 17.7, 34.5])  # SD 2.1, grad-free 32-bit
    slope = ((it - it.mean()) * (secs - secs.mean())).sum() / ((it - it.mean()) ** 2).sum()
    costs = chapters.unit_costs("SD2.1")
    assert math.isclose(costs["free32"], slope, rel_tol=1e-9) and 0.17 < slope < 0.18
    assert costs["free16"] < costs["free32"] < costs["grad32"]
    assert chapters.unit_costs("LaVie")["free32"] > 3 * costs["free32"]  # a 16-frame clip vs one image


def test_chapter_estimates_count_the_chapters_iterations():
    e = chapters.estimate("01_motivation", "sd21", {"n_images": 10, "steps": 30})
    # Adam and forward step, 10 x 30 each, and 4 more E(D) per image: T.ed(z*), ||T|| at z* and at both runs' ends
    assert e["iterations"] == {"free32": 640, "free16": 0, "grad32": 0, "grad16": 0}
    assert math.isclose(e["inversion_s"], 640 * chapters.unit_costs("SD2.1")["free32"])
    assert e["instances"] == 10 and e["unet_calls"] == 500 and e["generation"].startswith("not estimated")
    w = chapters.workload("04_adam_scheduling", {**chapters.notebook_defaults("04_adam_scheduling"),
                                                 "video_frames": [16], "video_steps": 1}, frames=16)
    defaults = chapters.notebook_defaults("04_adam_scheduling")
    n = defaults["n_images"]
    # counted in frames (16 per clip); 100 and 200 share one 200-iteration run (schedule cap 100)
    assert w["free32"] >= 16 * n * (20 + 50 + 200)
    video = chapters.estimate("07_anderson", "sd14-video")
    d = chapters.notebook_defaults("07_anderson")
    clips = d["n_images"]  # its n_images counts clips on a video profile
    assert "LaVie" in video["basis"] and video["unet_calls"] == 50 * clips
    frames = clips * 16 * d["steps"] * (2 + len(d["memories"]))  # Adam, forward step, one Anderson per memory
    assert video["iterations"]["free32"] == frames  # a frame is an item; LaVie's costs are per 16-frame video
    assert math.isclose(video["inversion_s"], frames / 16 * chapters.unit_costs("LaVie")["free32"])
    table = chapters.estimates_table()
    assert set(table["profile"]) == {"sd21", "sd15", "sd14-video"} and (table["estimated inversion time (min)"] > 0).all()
    with pytest.raises(ValueError, match="GPU estimates"):
        chapters.estimate("01_motivation", "tiny")


@pytest.mark.parametrize("name", chapters.ESTIMATED_CHAPTERS)
def test_every_estimated_chapter_declares_what_its_workload_reads(name):
    defaults = chapters.notebook_defaults(name)
    assert {"profile", "device"} <= set(defaults)
    chapters.workload(name, defaults)  # a KeyError here: the chapter's parameters changed, update workload()
    if name != "09_gpu":
        assert {"source", "generation"} <= set(defaults) and defaults["source"] is None


# ------------------------------------------------------------------------------- the one switch: build_book --profile


def build_book():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "build_book.py"
    spec = importlib.util.spec_from_file_location("build_book_for_profiles", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module, path.parent.parent


def test_profile_run_executes_what_can_run_it_and_says_why_it_skips_the_rest():
    bb, root = build_book()
    sources = sorted((root / "notebooks").glob("*.md"))
    run, skipped, declared = bb.profile_plan(sources, "sd14-video", root)
    ran = [s.stem for s in run]
    assert {"01_motivation", "02_cocoercivity", "03_fsm_km", "04_adam_scheduling", "07_anderson", "09_gpu"} <= set(ran)
    reasons = dict(skipped)
    assert "05_watermark" in reasons and "video" in reasons["05_watermark"]
    assert "06_editing" in reasons and "benchmark" in reasons and "profile" in reasons["benchmark"]
    assert set(ran) | set(reasons) == {s.stem for s in sources}  # nothing dropped silently
    args = bb.profile_args("01_motivation", declared["01_motivation"], "sd14-video", "cuda", "/tmp/p", "{steps: 2}")
    assert args == ["-p", "profile", "sd14-video", "-p", "device", "cuda", "-r", "source", "/tmp/p",
                    "-y", "generation: {steps: 2}"]
    assert bb.profile_args("09_gpu", declared["09_gpu"], "sd21", "cuda", "/tmp/p", None) == \
        ["-p", "profile", "sd21", "-p", "device", "cuda"]  # 06 declares no source: not passed
    with pytest.raises(SystemExit):
        bb.parse_args(["--device", "cuda"])  # --device alone would be silently ignored


def test_make_book_default_is_unchanged_and_profile_is_one_switch():
    import subprocess

    _, root = build_book()
    dry = lambda *v: subprocess.run(["make", "-n", "-C", str(root), "book", *v], capture_output=True, text=True,
                                    env={"PATH": "/usr/bin:/bin", "VENV": ".venv"}).stdout
    default = [line for line in dry().splitlines() if "build_book.py" in line]
    assert default == ["OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/build_book.py "]  \
        or default == ["OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/build_book.py"]
    profiled = [line for line in dry("PROFILE=sd21", "DEVICE=cuda").splitlines() if "build_book.py" in line]
    assert profiled and profiled[0].split("build_book.py", 1)[1].split() == ["--profile", "sd21", "--device", "cuda"]


def test_the_watermark_chapter_is_costed_from_table_2_and_only_for_image_profiles():
    e = chapters.estimate("05_watermark", "sd21", {"n_images": 2, "dinv_steps": 100, "noise_levels": [-20, -10]})
    costs = chapters.unit_costs("SD2.1")
    # both discs: 6 images each, inverted 100 times by each Adam, then 4 diffusion inversions per image (one per
    # method and the oracle's); the sensitivity check inverts the 6 images once per noise level
    assert e["iterations"] == {"free32": 1200, "free16": 0, "grad32": 1200, "grad16": 0}
    assert e["diffusion_inversions"] == 2 * 24 + 2 * 6 and e["instances"] == 18  # and the unwatermarked reference
    assert math.isclose(e["inversion_s"], 1200 * (costs["free32"] + costs["grad32"]) + 60 * 5.66)
    # per image and disc, the total lands near Table 2's three runtimes plus one more diffusion inversion (oracle)
    per_image = (e["inversion_s"] - 12 * 5.66) / 12
    assert abs(per_image - (5.66 + 38.0 + 22.9 + 5.66)) < 3
    # on the tiny LDM all images go in one batch and each method's per-image memory is probed apart on one image
    tiny = chapters.workload("05_watermark", {**chapters.notebook_defaults("05_watermark"), "n_images": 2,
                                              "dinv_steps": 100, "noise_levels": []})
    assert tiny["free32"] == tiny["grad32"] == 2 * (600 + 5) and tiny["diffusion_inversion"] == 2 * (24 + 3)
    table = chapters.estimates_table()
    assert set(table[table["chapter"] == "05_watermark"]["profile"]) == {"sd21", "sd15"}


def test_hub_profiles_chunk_the_autoencoder_by_default_and_results_do_not_depend_on_it(folder, monkeypatch):
    """load_profile sets LatentModel.chunk_size for the hub profiles (a chapter's 48 images of 512² must not go
    through the VAE at once on a GPU); invert and encode/decode use it when the call passes none, and the chunked
    result equals the unchunked one."""
    model, pipeline, prof = load_profile("sd21", "cpu", source=folder / "pipe", generation={"steps": 2})
    assert model.chunk_size == prof.chunk_size == 4
    inst = make_instances("sd21", model, pipeline, 6, prompts=PROMPTS[:1] * 6)
    seen = []
    original = model._decode_items
    monkeypatch.setattr(model, "_decode_items", lambda z: (seen.append(len(z)), original(z))[1])
    for method in ("gradfree-adam", "gradient-adam"):
        seen.clear()
        chunked = decinv.invert(inst.x, model, method, 3, lr=0.01, progress=False)
        assert max(seen) == 4 and len(seen) >= 2, (method, seen)
        model.chunk_size = None
        seen.clear()
        whole = decinv.invert(inst.x, model, method, 3, lr=0.01, progress=False)
        assert seen and max(seen) == 6
        model.chunk_size = 4
        torch.testing.assert_close(chunked.z, whole.z, rtol=1e-4, atol=1e-5)
    assert load_profile("tiny", "cpu")[0].chunk_size is None
