"""The tree-ring watermark protocol on real pipeline classes (decinv.applications.watermark_pipelines), offline on tiny random ones.

The pipelines come from `tests.tiny_pipelines` (16x16 images, 4x8x8 latents), loaded through `load_profile(...,
source=folder)` as the hub models are. On an 8x8 latent the watermark disc has radius <= 3.
"""

import contextlib

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the text-to-image pipelines need transformers (pip install -e .[test])")

from decinv.applications import watermark as wm  # noqa: E402
from decinv.applications import watermark_pipelines as wp  # noqa: E402
from decinv.generation.experiments import load_profile  # noqa: E402
from tests import tiny_pipelines  # noqa: E402

PROMPTS = tiny_pipelines.PROMPTS
RADIUS = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_pipelines.build(tmp_path_factory.mktemp("wm_t2i")) / "pipe"


@pytest.fixture(scope="module")
def sd21(folder):
    return load_profile("sd21", "cpu", source=folder)[1].with_protocol(steps=3)


@pytest.fixture(scope="module")
def flow(folder):
    return load_profile("sd15", "cpu", source=folder)[1]


@contextlib.contextmanager
def unet_calls(unet):
    """Record (batch size, encoder_hidden_states) of every UNet forward."""
    calls = []

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        calls.append((sample.shape[0], kwargs["encoder_hidden_states"].detach().clone()))

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@contextlib.contextmanager
def latent_blind(unet):
    """Make the UNet ignore its latent input (it sees zeros): eps / v then depends on t and the text only."""
    def hook(module, args, kwargs):
        if args:
            return (torch.zeros_like(args[0]),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "sample": torch.zeros_like(kwargs["sample"])}

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def text_embedding(pipeline, prompt):
    """The CLIP embedding of ``prompt`` computed here, independently of the pipeline's encode_prompt."""
    pipe = pipeline.pipe
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def noises(pipeline, seed=0, centred=True):
    keys, mask = wp.watermark_keys(pipeline, RADIUS, centred_on_dc=centred)
    return wp.watermarked_noises(pipeline, seed, keys, mask), keys, mask


# ------------------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("which", ["sd21", "flow"])
def test_generation_is_seed_reproducible_bit_for_bit(which, request):
    pipeline = request.getfixturevalue(which)
    z_T = noises(pipeline, seed=4)[0]
    assert torch.equal(z_T, noises(pipeline, seed=4)[0]) and not torch.equal(z_T, noises(pipeline, seed=5)[0])
    x1, z1 = wp.generate_watermarked(pipeline, z_T[1:2], PROMPTS[0])
    x2, z2 = wp.generate_watermarked(pipeline, noises(pipeline, seed=4)[0][1:2], PROMPTS[0])
    assert torch.equal(x1, x2) and torch.equal(z1, z2)
    assert x1.shape == (1, 3, 16, 16) and z1.shape == (1, 4, 8, 8)
    levels = (x1 + 1) * 127.5
    assert (levels - levels.round()).abs().max() < 1e-4  # the reloaded 8-bit image
    assert not torch.equal(z1, wp.generate_watermarked(pipeline, z_T[2:3], PROMPTS[0])[1])  # z_T matters


def test_sd21_generation_with_latents_is_the_pipelines_own_call(sd21):
    """latents=z_T and CFG 7.5 reach StableDiffusionPipeline.__call__: a plain call gives the same latent."""
    z_T = noises(sd21)[0][:1]
    _, z0 = wp.generate_watermarked(sd21, z_T, PROMPTS[1])
    own = sd21.pipe(PROMPTS[1], num_inference_steps=3, guidance_scale=7.5, latents=z_T.clone(),
                    output_type="latent").images
    assert torch.equal(own, z0)


@pytest.mark.parametrize("which, batch", [("sd21", 2), ("flow", 1)])
def test_prompt_and_guidance_reach_the_unet_in_generation_and_inversion(which, batch, request):
    """SD: CFG 7.5 doubles the batch to [uncond; prompt] in every call of both directions; InstaFlow: CFG 1.0,
    the prompt alone. The embeddings are compared with the text encoder's output computed here."""
    pipeline = request.getfixturevalue(which)
    z_T = noises(pipeline)[0][:1]
    prompt, other = PROMPTS[1], PROMPTS[2]
    expected = text_embedding(pipeline, prompt)
    uncond = text_embedding(pipeline, "")
    with unet_calls(pipeline.pipe.unet) as gen_calls:
        _, z0 = wp.generate_watermarked(pipeline, z_T, prompt)
    with unet_calls(pipeline.pipe.unet) as inv_calls:
        wp.invert_diffusion(pipeline, z0, [prompt], iterations=4)
    assert len(gen_calls) == pipeline.protocol.steps
    assert len(inv_calls) == (pipeline.protocol.steps if which == "sd21" else 4)
    for size, states in gen_calls + inv_calls:
        assert size == batch
        assert torch.allclose(states[-1:], expected, atol=1e-6)  # the conditional branch is the last
        if batch == 2:
            assert torch.allclose(states[:1], uncond, atol=1e-6)
    # ... and they change the results: another prompt or another scale gives another answer
    assert not torch.equal(z0, wp.generate_watermarked(pipeline, z_T, other)[1])
    assert not torch.equal(z0, wp.generate_watermarked(pipeline, z_T, prompt, guidance_scale=2.0)[1])
    a = wp.invert_diffusion(pipeline, z0, [prompt], iterations=4)
    assert not torch.equal(a, wp.invert_diffusion(pipeline, z0, [other], iterations=4))
    assert not torch.equal(a, wp.invert_diffusion(pipeline, z0, [prompt], guidance_scale=3.0, iterations=4))


def test_guidance_override_doubles_the_flow_batch(flow):
    with unet_calls(flow.pipe.unet) as calls:
        z0 = wp.generate_watermarked(flow, noises(flow)[0][:1], PROMPTS[0], guidance_scale=2.0)[1]
        wp.invert_diffusion(flow, z0, [PROMPTS[0]], guidance_scale=2.0, iterations=2)
    assert [size for size, _ in calls] == [2, 2, 2]


# -------------------------------------------------------------------------------------------------- inversion


def test_naive_ddim_inversion_is_exact_when_eps_ignores_the_latent(folder):
    """With eps(z, t, c) = eps(t, c) the naive step uses the sampler's own eps: z_T is recovered to round-off, on
    the paper's 50-step grid, through the real pipeline call and CFG 7.5."""
    pipeline = load_profile("sd21", "cpu", source=folder)[1]
    z_T = noises(pipeline)[0][:2]
    with latent_blind(pipeline.pipe.unet):
        z0 = torch.cat([wp.generate_watermarked(pipeline, z[None], p)[1] for z, p in zip(z_T, PROMPTS)])
        back = wp.ddim_invert_guided(pipeline, z0, PROMPTS[:2])
    assert (back - z_T).abs().max() < 1e-4 * z_T.abs().max()
    assert not torch.allclose(z0, z_T, atol=1e-2)  # sampling did move the latent


def test_naive_ddim_inversion_has_an_error_with_a_real_unet(sd21):
    z_T = noises(sd21)[0][:1]
    z0 = wp.generate_watermarked(sd21, z_T, PROMPTS[0])[1]
    back = wp.ddim_invert_guided(sd21, z0, [PROMPTS[0]])
    assert back.shape == z_T.shape and torch.isfinite(back).all()
    assert (back - z_T).abs().max() > 1e-3  # naive inversion is approximate: it does not read z_T back


def test_backward_euler_inverts_a_constant_field_to_round_off():
    g = torch.Generator().manual_seed(0)
    z_T, b = torch.randn(2, 4, 8, 8, generator=g), 3 * torch.randn(2, 4, 8, 8, generator=g)
    z0 = z_T + b  # one Euler step of v = b
    for iterations in (1, 100):
        assert torch.allclose(wp.backward_euler(lambda z, t: b, z0, 1, iterations), z_T, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 3])
def test_backward_euler_converges_for_a_contractive_affine_field(steps):
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    A = 0.6 * q  # ||A|| = 0.6 < 1: z -> z_{i+1} - v(z)/N is a contraction
    b = torch.randn(16, generator=g, dtype=torch.float64)

    def v(z, t):
        return z @ A.T + b * t / 1000

    z_T = torch.randn(5, 16, generator=g, dtype=torch.float64)
    z = z_T
    for i in range(steps):  # the sampler: z_{i+1} = z_i + v(z_i, t_i) / N
        z = z + v(z, 1000.0 * (1 - i / steps)) / steps
    assert torch.allclose(wp.backward_euler(v, z, steps, 100), z_T, atol=1e-10)
    assert not torch.allclose(wp.backward_euler(v, z, steps, 2), z_T, atol=1e-3)  # 2 iterations are not enough


def test_backward_euler_through_the_pipeline_is_exact_for_a_latent_blind_unet(flow):
    z_T = noises(flow)[0]
    with latent_blind(flow.pipe.unet):
        z0 = torch.cat([wp.generate_watermarked(flow, z[None], PROMPTS[0])[1] for z in z_T])
        back = wp.invert_flow(flow, z0, [PROMPTS[0]] * 3, iterations=3)
    assert (back - z_T).abs().max() < 1e-5 * z_T.abs().max()


# --------------------------------------------------------------------------------------------- classification


@pytest.mark.parametrize("which", ["sd21", "flow"])
def test_an_exactly_recovered_z_T_is_classified_correctly(which, request):
    """End to end with a latent-blind UNet, so the diffusion inversion of the true z_0 is exact: with the DC-centred
    disc every image is read correctly; with the official disc the reading equals watermark.classify of the true
    z_T (whose blur caps exact inversion at 2/3, see decinv.applications.watermark)."""
    pipeline = request.getfixturevalue(which)
    with latent_blind(pipeline.pipe.unet):
        centred = wp.run_watermark(pipeline, PROMPTS[:2], radius=RADIUS, centred_on_dc=True, dinv_steps=1,
                                   methods=[("Encoder", "encoder", {})], iterations=3, progress=False)
        official = wp.run_watermark(pipeline, PROMPTS[:2], radius=RADIUS, dinv_steps=1,
                                    methods=[("Encoder", "encoder", {})], iterations=3, progress=False)
    for oracle in wp.ORACLES:
        assert np.array_equal(centred.confusion_matrix(oracle), np.diag([2, 2, 2]))
    keys, mask = wp.watermark_keys(pipeline, RADIUS)
    z_T = torch.cat([wp.watermarked_noises(pipeline, seed, keys, mask) for seed in (0, 1)])
    truth = wm.classify(z_T, keys, mask).numpy()
    for oracle in wp.ORACLES:
        assert np.array_equal(official.predictions[oracle], truth)


def test_run_returns_the_confusion_matrices_time_and_memory(sd21):
    run = wp.run_watermark(sd21, PROMPTS[:2], seed=3, radius=RADIUS, dinv_steps=2, progress=False)
    assert run.protocol == "sd21" and run.seeds == [3, 4] and run.prompts == PROMPTS[:2]
    assert list(run.labels) == [0, 1, 2, 0, 1, 2]
    assert run.methods == ["Encoder", "Grad-based", "Grad-free", *wp.ORACLES]
    for label, cm in run.confusion_matrices().items():
        assert cm.shape == (3, 3) and cm.sum() == 6 and list(cm.sum(axis=1)) == [2, 2, 2]
    for label, *_ in wp.PAPER_METHODS:
        assert run.seconds[label].shape == (6,) and (run.seconds[label] > 0).all()
        assert run.peak_memory_bytes[label].shape == (6,)
    assert run.settings["guidance_scale"] == 7.5 and run.settings["steps"] == 3
    table = run.table()
    assert list(table.index) == run.methods and table["images"].eq(6).all()
    assert np.isnan(table.loc["True z_T", "s per image"])
    compared = wp.compare_with_paper(run)
    assert compared.loc["Grad-free", "paper accuracy"] == "202/300"
    assert compared.loc["Encoder", "paper runtime (s)"] == 5.66
    assert compared.loc["Grad-based", "this run accuracy"] == f"{table.loc['Grad-based', 'correct']}/6"
    again = wp.run_watermark(sd21, PROMPTS[:2], seed=3, radius=RADIUS, dinv_steps=2, progress=False)
    for label in run.methods:  # the whole run is reproducible
        assert np.array_equal(run.predictions[label], again.predictions[label])


def test_flow_run_uses_cfg_1_and_one_step(flow):
    run = wp.run_watermark(flow, PROMPTS[:1], radius=RADIUS, dinv_steps=1, iterations=2, oracles=False,
                           progress=False)
    assert run.settings["guidance_scale"] == 1.0 and run.settings["steps"] == 1
    assert set(run.predictions) == {"Encoder", "Grad-based", "Grad-free"}
    assert wp.compare_with_paper(run).loc["Grad-free", "paper accuracy"] == "227/300"


def test_paper_numbers_are_consistent():
    """Fig. S1's rows hold 100 images each and its traces are Table 2's accuracies (notes §5.7)."""
    for model, mats in wp.PAPER_FIG_S1.items():
        for method, cm in mats.items():
            cm = np.array(cm)
            assert list(cm.sum(axis=1)) == [100, 100, 100]
            assert np.trace(cm) == wp.PAPER_TABLE2[model]["accuracy"][method]
    assert wp.paper_confusion("instaflow")["Grad-free"][1, 1] == 97


# ------------------------------------------------------------------------------------------------------ errors


def test_bad_inputs_raise_clear_errors(sd21, folder):
    from decinv.generation.experiments import load_profile as lp

    with pytest.raises(TypeError, match="TextToImage"):
        wp.run_watermark(object(), PROMPTS)
    with pytest.raises(ValueError, match="batch"):
        wp.run_watermark(lp("tiny", "cpu")[1], 1, batch=0)
    with pytest.raises(ValueError, match="video-diffusion"):
        wp.invert_diffusion(sd21.with_protocol(kind="video-diffusion"), torch.zeros(1, 4, 8, 8), "a")
    with pytest.raises(ValueError, match="radius"):
        wp.watermark_keys(sd21, 6)  # the paper's radius does not fit an 8x8 latent
    with pytest.raises(ValueError, match="square"):
        wp.watermark_keys(sd21.with_protocol(height=16, width=32))
    with pytest.raises(ValueError, match="divisible"):
        wp.latent_shape(sd21.with_protocol(height=17))  # the tiny VAE downsamples x2
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        wp.generate_watermarked(sd21, torch.zeros(1, 4, 16, 16), "a")
    with pytest.raises(ValueError, match="prompt"):
        wp.ddim_invert_guided(sd21, torch.zeros(2, 4, 8, 8), ["a"])
    with pytest.raises(ValueError, match="finite"):
        wp.ddim_invert_guided(sd21, torch.full((1, 4, 8, 8), float("nan")), ["a"])
    with pytest.raises(ValueError, match="guidance_scale"):
        wp.ddim_invert_guided(sd21, torch.zeros(1, 4, 8, 8), ["a"], guidance_scale=-1)
    with pytest.raises(ValueError, match="iterations"):
        wp.backward_euler(lambda z, t: z, torch.zeros(1), 1, 0)
    with pytest.raises(ValueError, match="Table 2 has no"):
        wp.paper_model("animatediff")
    with pytest.raises(ValueError, match="methods"):
        wp.run_watermark(sd21, PROMPTS, radius=RADIUS, methods=[("A", "encoder", {}), ("A", "encoder", {})])
    second = load_profile("sd21", "cpu", source=folder)[1]
    second.pipe.scheduler = type(second.pipe.scheduler).from_config(second.pipe.scheduler.config, solver_order=2)
    with pytest.raises(ValueError, match="first-order"):
        wp.ddim_invert_guided(second, torch.zeros(1, 4, 8, 8), ["a"])


# ------------------------------------------------------------------------------------------- the tiny LDM, same run


def test_one_protocol_drives_the_tiny_ldm_batched_or_one_by_one():
    """run_watermark takes load_profile("tiny")'s pipeline like a real one: the noises are watermarked_noises of
    seeds seed + i, z_0 is TinyLDM.generate of them, and batching changes no prediction."""
    from decinv.generation.experiments import TinyLDM

    _, pipe, _ = load_profile("tiny", "cpu")
    methods = [("Encoder", "encoder", {})]
    together = wp.run_watermark(pipe, 2, seed=5, steps=3, methods=methods, batch=6, progress=False)
    alone = wp.run_watermark(pipe, 2, seed=5, steps=3, methods=methods, progress=False)
    ldm = wp.watermark_ldm(pipe, steps=3)
    assert isinstance(ldm, TinyLDM) and ldm.steps == 3 and together.protocol == "tiny"
    keys, mask = wp.watermark_keys(ldm, 6)
    noises = torch.cat([wp.watermarked_noises(ldm, s, keys, mask) for s in (5, 6)])
    assert torch.equal(together.z_T, noises) and together.seeds == [5, 6]
    assert torch.equal(together.z0, ldm.generate(noises)[1])
    torch.testing.assert_close(alone.z0, together.z0, rtol=1e-4, atol=1e-5)
    for label in together.methods:
        assert np.array_equal(together.predictions[label], alone.predictions[label])
    table = together.table()
    assert (table["ci low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci high"]).all()
    assert np.isnan(table.loc["True z_T", "zT NMSE (dB)"]) and table.loc["Encoder", "pixel PSNR (dB)"] > 20
    assert (together.seconds["Encoder"] > 0).all() and together.settings["batch"] == 6


def test_read_back_classifies_the_diffusion_inversion_in_chunks():
    _, pipe, _ = load_profile("tiny", "cpu")
    ldm = wp.watermark_ldm(pipe, steps=2)
    keys, mask = wp.watermark_keys(ldm, 6, centred_on_dc=True)
    z_T = wp.watermarked_noises(ldm, 0, keys, mask)
    z0 = ldm.generate(z_T)[1]
    pred, z_T_hat = wp.read_back(ldm, z0, [""] * 3, keys, mask, batch=2)
    assert torch.equal(pred, wm.classify(ldm.invert_diffusion(z0).float(), keys, mask))
    torch.testing.assert_close(z_T_hat, ldm.invert_diffusion(z0).float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["sd21", "flow"])
def test_diffusion_inversions_are_counted_as_work(which, request):
    """Each latent a real pipeline's diffusion inversion takes counts once (`decinv.core.work`), as the tiny LDM's
    ddim_invert does: the GPU estimates cost chapter 5 by this count."""
    from decinv.core import work

    pipe = request.getfixturevalue(which)
    z0 = torch.randn(2, *wp.latent_shape(pipe), generator=torch.Generator().manual_seed(0))
    with work.count_work() as w:
        wp.invert_diffusion(pipe, z0, PROMPTS[:2], steps=2, iterations=2)
    assert dict(w.done) == {work.DIFFUSION_INVERSION: 2}
