"""Configurations that break the method's assumptions (issue 24, item 2): each option that makes an inversion or a
round trip silently wrong is refused with an error naming it, and each neighbouring option that is fine is shown to
work. Where an option is refused, the test first shows, with diffusers alone, that the harm is real."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

import decinv
from decinv.applications import editing
from decinv.generation.diffusion import ddim_invert, ddim_sample
from decinv.core.validation import UnsupportedConfigError
from tests.autoencoder_zoo import IMAGE, VIDEO, tiny_kl, tiny_ltx
from tests.test_diffusion import SCHED_CONFIG


class Oracle(torch.nn.Module):
    """The ideal denoiser of one data point: for the trajectory z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps it
    predicts eps, v or x0 (the scheduler's ``prediction_type``) whatever latent it is given. DDIM sampling from
    z_T on that trajectory stays on it, and naive inversion walks it back exactly: any round-trip error is the
    scheduler's, not the network's."""

    def __init__(self, scheduler, x0, eps):
        super().__init__()
        self.abar, self.kind, self.x0, self.eps = scheduler.alphas_cumprod, scheduler.config.prediction_type, x0, eps

    def forward(self, z, t):
        a = self.abar[int(t)]
        out = {"epsilon": self.eps, "sample": self.x0,
               "v_prediction": a.sqrt() * self.eps - (1 - a).sqrt() * self.x0}[self.kind]
        return SimpleNamespace(sample=out)

    def point(self, t):
        a = self.abar[int(t)]
        return a.sqrt() * self.x0 + (1 - a).sqrt() * self.eps


def oracle(config, seed=0, x_scale=2.0):
    scheduler = DDIMScheduler(**config)
    g = torch.Generator().manual_seed(seed)
    x0, eps = x_scale * torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    return scheduler, Oracle(scheduler, x0, eps)


def start(scheduler, net, steps):
    grid = DDIMScheduler.from_config(scheduler.config)
    grid.set_timesteps(steps)
    return net.point(grid.timesteps[0])


def raw_round_trip(scheduler, net, steps):
    """Sampling and naive inversion with diffusers' schedulers alone (no decinv checks): the relative error."""
    s, inv = DDIMScheduler.from_config(scheduler.config), DDIMInverseScheduler.from_config(scheduler.config)
    s.set_timesteps(steps)
    z_T = z = start(scheduler, net, steps)
    for t in s.timesteps:
        z = s.step(net(z, t).sample, t, z, eta=0.0).prev_sample
    inv.set_timesteps(steps)
    for t in inv.timesteps:
        z = inv.step(net(z, t).sample, t, z).prev_sample
    return float((z - z_T).norm() / z_T.norm())


# --- DDIM: supported settings give an exact round trip with the oracle -------------------------------------------

@pytest.mark.parametrize("changes, steps", [
    ({}, 10), ({"prediction_type": "sample"}, 10), ({"set_alpha_to_one": True}, 10), ({"steps_offset": 0}, 7),
    ({"timestep_spacing": "trailing"}, 10), ({"timestep_spacing": "trailing"}, 7),
    ({"beta_schedule": "squaredcos_cap_v2"}, 10), ({"clip_sample": False, "clip_sample_range": 0.5}, 10),
    ({"steps_offset": 1}, 999),
])
def test_supported_scheduler_settings_round_trip_exactly(changes, steps):
    scheduler, net = oracle({**SCHED_CONFIG, **changes})
    z_T = start(scheduler, net, steps)
    z0 = ddim_sample(net, scheduler, z_T, steps)
    back = ddim_invert(net, scheduler, z0, steps)
    assert torch.isfinite(z0).all() and not torch.allclose(z0, z_T, atol=0.1)
    assert float((back - z_T).norm() / z_T.norm()) < 1e-4
    traj = editing.inversion_trajectory(net, scheduler, z0, steps)
    assert torch.allclose(traj.z_T, back)


@pytest.mark.parametrize("changes", [{"prediction_type": "v_prediction"},
                                     {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                                      "timestep_spacing": "trailing"}])
def test_v_prediction_is_supported_with_an_error_that_shrinks_like_one_over_steps(changes):
    """Naive inversion evaluates the UNet at the next step's label: for epsilon (and sample) prediction the ideal
    denoiser's output does not depend on the label's noise level, for v it does, so even that denoiser is inverted
    with an error, O(1/steps). Documented in `decinv.generation.diffusion.check_scheduler`, not refused."""
    errors = []
    for steps in (10, 50, 200):
        scheduler, net = oracle({**SCHED_CONFIG, **changes})
        z_T = start(scheduler, net, steps)
        back = ddim_invert(net, scheduler, ddim_sample(net, scheduler, z_T, steps), steps)
        assert torch.isfinite(back).all()
        errors.append(float((back - z_T).norm() / z_T.norm()))
    assert errors[0] > 0.05 and errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3


# --- DDIM: refused settings, each shown harmful first ------------------------------------------------------------

REFUSED = [
    # (changes, steps, what diffusers alone does, words the refusal must contain)
    ({"clip_sample": True}, 10, "error", "clip_sample=False"),
    ({"thresholding": True}, 10, "error", "thresholding=False"),
    ({"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}, 10, "nan", "v_prediction"),
    ({"timestep_spacing": "linspace"}, 10, "raises", "timestep_spacing='leading'"),
    ({"steps_offset": 1}, 1000, "index", "at most 999 steps"),
]


@pytest.mark.parametrize("changes, steps, harm, words", REFUSED)
def test_refused_scheduler_settings_are_harmful(changes, steps, harm, words):
    scheduler, net = oracle({**SCHED_CONFIG, **changes})
    if harm == "raises":
        with pytest.raises(ValueError, match="not supported"):  # DDIMInverseScheduler, from inside diffusers
            raw_round_trip(scheduler, net, steps)
    elif harm == "index":
        scheduler.set_timesteps(steps)
        z = torch.zeros(1, 4, 8, 8)
        with pytest.raises(IndexError):  # alphas_cumprod[1000], from inside the scheduler
            scheduler.step(z, scheduler.timesteps[0], z)
    elif harm == "nan":
        assert raw_round_trip(scheduler, net, steps) != raw_round_trip(scheduler, net, steps)  # NaN
    else:
        assert raw_round_trip(scheduler, net, steps) > 1e-3  # silently wrong
        assert raw_round_trip(oracle(SCHED_CONFIG)[0], oracle(SCHED_CONFIG)[1], steps) < 1e-4


@pytest.mark.parametrize("changes, steps, harm, words", REFUSED)
@pytest.mark.parametrize("entry", ["ddim_sample", "ddim_invert", "sample_trajectory", "inversion_trajectory",
                                   "resampled_trajectory", "blended_edit"])
def test_refused_scheduler_settings_name_the_option(changes, steps, harm, words, entry):
    scheduler, net = oracle({**SCHED_CONFIG, **changes})
    z = torch.randn(2, 4, 8, 8)
    call = {"ddim_sample": lambda: ddim_sample(net, scheduler, z, steps),
            "ddim_invert": lambda: ddim_invert(net, scheduler, z, steps),
            "sample_trajectory": lambda: editing.sample_trajectory(net, scheduler, z, steps),
            "inversion_trajectory": lambda: editing.inversion_trajectory(net, scheduler, z, steps),
            "resampled_trajectory": lambda: editing.resampled_trajectory(net, scheduler, z, steps)}
    sampling_only = entry in ("ddim_sample", "sample_trajectory", "blended_edit")
    if entry == "blended_edit":
        if "linspace" in str(changes):
            traj = editing.sample_trajectory(net, scheduler, z, steps)
        else:
            traj = editing.sample_trajectory(net, oracle(SCHED_CONFIG)[0], z, min(steps, 999))
            traj.timesteps = torch.arange(steps)  # the grid is compared only after the scheduler's settings
        call[entry] = lambda: editing.blended_edit(net, scheduler, traj, editing.box_mask(8), z)
    if sampling_only and "linspace" in str(changes):
        call[entry]()  # sampling has a linspace grid; only its inversion does not
        return
    with pytest.raises(UnsupportedConfigError, match=words):
        call[entry]()


def test_an_unknown_prediction_type_is_refused_before_any_step():
    scheduler = DDIMScheduler(**SCHED_CONFIG)
    scheduler.register_to_config(prediction_type="flow_prediction")
    with pytest.raises(UnsupportedConfigError, match="prediction_type='flow_prediction'"):
        ddim_sample(Oracle(DDIMScheduler(**SCHED_CONFIG), torch.zeros(1), torch.zeros(1)), scheduler,
                    torch.zeros(1, 4, 8, 8), 5)


# --- the real pipeline's scheduler (DPM-Solver, first order) ------------------------------------------------------

@pytest.fixture(scope="module")
def sd21(tmp_path_factory):
    pytest.importorskip("transformers")
    from decinv.generation.experiments import load_profile
    from tests import tiny_pipelines

    folder = tiny_pipelines.build(tmp_path_factory.mktemp("configs_t2i")) / "pipe"
    return folder, load_profile("sd21", "cpu", source=folder)[1].with_protocol(steps=3)


@pytest.mark.parametrize("changes, words", [({"thresholding": True}, "thresholding=False"),
                                            ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr=False"),
                                            ({"algorithm_type": "sde-dpmsolver++"}, "DPMSolverMultistepScheduler"),
                                            ({"prediction_type": "v_prediction"}, "epsilon")])
def test_watermark_inversion_refuses_a_sampler_it_cannot_invert(sd21, changes, words):
    from diffusers import DPMSolverMultistepScheduler

    from decinv.applications import watermark_pipelines as wp

    _, pipeline = sd21
    pipe, kept = pipeline.pipe, pipeline.pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(kept.config, **changes)
    try:
        with pytest.raises(ValueError, match=words):
            wp.ddim_invert_guided(pipeline, torch.zeros(1, 4, 8, 8), ["a red cat"])
    finally:
        pipe.scheduler = kept


@pytest.mark.parametrize("changes", [{"use_karras_sigmas": True}, {"timestep_spacing": "trailing"},
                                     {"final_sigmas_type": "zero"}])
def test_watermark_inversion_follows_other_grids_exactly_for_a_latent_blind_unet(sd21, changes):
    """Grid options are supported: the inversion reads the sampler's own sigmas, so a UNet that ignores its latent is
    inverted to round-off on any grid."""
    from diffusers import DPMSolverMultistepScheduler

    from decinv.applications import watermark_pipelines as wp
    from tests.test_watermark_pipelines import latent_blind

    _, pipeline = sd21
    pipe, kept = pipeline.pipe, pipeline.pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(kept.config, **changes)
    try:
        z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        with latent_blind(pipe.unet):
            z0 = wp.generate_watermarked(pipeline, z_T, "a red cat")[1]
            back = wp.ddim_invert_guided(pipeline, z0, ["a red cat"])
    finally:
        pipe.scheduler = kept
    assert (back - z_T).abs().max() < 1e-4 * z_T.abs().max() and not torch.allclose(z0, z_T, atol=1e-2)


# --- pipelines whose images would not be D(z*) --------------------------------------------------------------------

def test_pipelines_that_alter_the_decoded_image_are_refused(sd21):
    from diffusers.image_processor import VaeImageProcessor

    from decinv.generation.pipelines import TextToImage

    _, pipeline = sd21
    pipe = pipeline.pipe
    TextToImage.from_pipeline(pipe, "sd21", device="cpu")  # as loaded: fine
    pipe.safety_checker = torch.nn.Identity()
    try:
        with pytest.raises(UnsupportedConfigError, match="safety_checker=None"):
            TextToImage.from_pipeline(pipe, "sd21", device="cpu")
    finally:
        pipe.safety_checker = None
    kept = pipe.image_processor
    pipe.image_processor = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor, do_normalize=False)
    try:
        with pytest.raises(UnsupportedConfigError, match="do_normalize=False"):
            TextToImage.from_pipeline(pipe, "sd21", device="cpu")
    finally:
        pipe.image_processor = kept
    pipe.vae.enable_tiling()
    try:
        with pytest.raises(UnsupportedConfigError, match="use_tiling=True.*disable_tiling"):
            TextToImage.from_pipeline(pipe, "sd21", device="cpu")
    finally:
        pipe.vae.disable_tiling()


# --- autoencoders: tiling refused, slicing supported, statistics checked ------------------------------------------

def test_tiling_changes_the_encoder():
    """Why tiling is refused: on an image larger than a tile, the tiled E is another function."""
    vae = tiny_kl().eval()
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        plain = vae.encode(x).latent_dist.mode()
        vae.enable_tiling()
        tiled = vae.encode(x).latent_dist.mode()
    assert (plain - tiled).abs().max() > 1e-3


@pytest.mark.parametrize("cls", list(IMAGE) + list(VIDEO))
def test_tiling_is_refused_for_every_class(cls):
    build = {**IMAGE, **VIDEO}[cls]
    model = decinv.load_model(build(), device="cpu")
    model.vae.enable_tiling()
    x = torch.rand(1, 5, 3, 16, 16) * 2 - 1 if model.temporal else torch.rand(1, 3, 16, 16) * 2 - 1
    z = torch.zeros(1, 2, 4, 4, 4) if model.temporal else torch.zeros(1, model.latent_channels, 8, 8)
    for call in (lambda: model.encode(x), lambda: model.decode(z),
                 lambda: decinv.invert(x, model, "forward-step", 1, progress=False)):
        with pytest.raises(UnsupportedConfigError, match="use_tiling=True"):
            call()
    model.vae.disable_tiling()
    model.encode(x)


def test_ltx_frame_wise_modes_are_refused():
    model = decinv.load_model(tiny_ltx(), device="cpu")
    for flag in ("use_framewise_encoding", "use_framewise_decoding"):
        setattr(model.vae, flag, True)
        with pytest.raises(UnsupportedConfigError, match=flag):
            model.encode(torch.zeros(1, 5, 3, 16, 16))
        setattr(model.vae, flag, False)


@pytest.mark.parametrize("cls", list(IMAGE) + list(VIDEO))
def test_slicing_is_supported_and_changes_nothing(cls):
    build = {**IMAGE, **VIDEO}[cls]
    model = decinv.load_model(build(), device="cpu")
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 5, 3, 16, 16, generator=g) if model.temporal else torch.rand(3, 3, 16, 16, generator=g)) * 2 - 1
    ref = decinv.invert(x, model, "gradfree-adam", 2, progress=False).z
    model.vae.enable_slicing()
    sliced = decinv.invert(x, model, "gradfree-adam", 2, progress=False).z
    assert torch.allclose(sliced, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config, words", [
    ({"scaling_factor": 0.0}, "scaling_factor=0.0"), ({"scaling_factor": -0.18}, "scaling_factor=-0.18"),
    ({"scaling_factor": float("nan")}, "scaling_factor=nan"), ({"shift_factor": float("inf")}, "shift_factor=inf"),
    ({"latents_mean": [0.0] * 4, "latents_std": [1.0, 0.0, 1.0, 1.0]}, "latents_std"),
    ({"latents_mean": [0.0, float("nan"), 0.0, 0.0], "latents_std": [1.0] * 4}, "latents_mean"),
])
def test_latent_statistics_that_cannot_be_divided_by_are_refused(config, words):
    """scaling_factor=0 used to be read as 1.0 (``or 1.0``), silently: the latents were then not the pipeline's."""
    with pytest.raises(UnsupportedConfigError, match=words):
        decinv.load_model(tiny_kl(**config), device="cpu")


def test_flux2_batch_norm_statistics_are_checked():
    vae = IMAGE["AutoencoderKLFlux2"]()
    vae.bn.running_var.fill_(-1.0)
    with pytest.raises(UnsupportedConfigError, match="running_var"):
        decinv.load_model(vae, device="cpu")
