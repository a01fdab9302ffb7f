"""The paper's tree-ring watermark experiment (Sec. 5.1, Table 2, Fig. S1) on a real text-to-image pipeline.

The protocol follows the official ``main_watermark_detection.py`` (notes §5.7). For prompt i = 0..N-1 and
generation seed s (0 in the paper), three independent initial noises z_T ~ N(0, I) are drawn from
``torch.Generator("cpu").manual_seed(s + i)``; noise w (w = 0, 1, 2) gets key w of `decinv.applications.watermark` written into
channel 0 (`decinv.applications.watermark.inject`: radius 6 on the 64×64 latent of a 512² image, the official off-DC disc).
Each noise is turned into an image and read back:

    z_T^w --generate(prompt i)--> z_0 --D, 8 bit--> x --decoder inversion--> ẑ_0 --diffusion inversion--> ẑ_T
    prediction = argmin_j mean_disc |fftshift(fft2(ẑ_T[:, 0])) − key_j|                (`decinv.applications.watermark.classify`)

* ``"sd21"`` (``kind="diffusion"``): generation is the ``StableDiffusionPipeline`` call with ``latents=z_T``, the
  paper's ``DPMSolverMultistepScheduler(solver_order=1)`` (= DDIM), 50 steps and CFG **7.5** (the watermark code's,
  not the 3.0 of the instance protocol); diffusion inversion is naïve DDIM inversion on the sampler's own 50-step grid
  with the *true* prompt and CFG 7.5 (`ddim_invert_guided`).
* ``"instaflow"`` (``kind="rectified-flow"``): one Euler step of the rectified flow from z_T with CFG 1.0; inversion
  is backward Euler, 100 fixed-point iterations (`backward_euler`).
* Decoder inversion (`PAPER_METHODS`): the encoder, gradient-based Adam (100 iterations, lr 0.1, warm-up + cosine)
  and gradient-free Adam (100 iterations, lr 0.01, the paper's schedule), all in the pipeline's dtype (float32 for
  the paper) through `decinv.invert`.

Cost per image (`run_watermark`): wall time and peak memory of decoder inversion *plus* diffusion inversion, one
image at a time, as the paper measured Table 2 (`decinv.core.measure.measure`: on CUDA ``torch.cuda.max_memory_allocated``,
absolute, so it includes the resident pipeline weights like the paper's numbers; on a Linux CPU the *extra* resident
memory of the block, weights excluded; NaN where the platform has no counter).

`compare_with_paper` puts the measured accuracy, time and memory beside the paper's Table 2 and `PAPER_FIG_S1` holds
its confusion matrices (both quoted from the paper, notes §5.7). The paper's noise is drawn by the global RNG on the
GPU (``set_random_seed(i)``), so ours has the same distribution but not the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from decinv.applications import watermark as wm
from decinv.core import work
from decinv.core.measure import measure
from decinv.core.metrics import nmse_db, psnr
from decinv.core.progress import progress_bar
from decinv.core.solvers import invert
from decinv.core.validation import UnsupportedConfigError
from decinv.paper import (GRADFREE_ADAM, GRADIENT_SCHEDULED, PAPER_FIG_S1, PAPER_PROTOCOL_MODEL,  # noqa: F401
                          PAPER_TABLE2, PAPER_WATERMARK_PROTOCOL)  # (PAPER_* re-exported)
from decinv.generation.experiments import TinyLDM
from decinv.generation.pipelines import TextToImage, TextToVideo, guided_output, load_prompts

WATERMARK_GUIDANCE = PAPER_WATERMARK_PROTOCOL["guidance"]
"""CFG scale of the watermark experiment per protocol kind: SD 2.1 7.5 (main_watermark_detection.py), InstaFlow 1.0."""

EULER_ITERATIONS = PAPER_WATERMARK_PROTOCOL["euler_iterations"]  # backward-Euler fixed-point iterations (App. A.2.2)
DINV_STEPS = PAPER_WATERMARK_PROTOCOL["decoder_inversion_steps"]  # both iterative decoder inversions (App. A.2.2)

PAPER_METHODS = (("Encoder", "encoder", {}),
                 ("Grad-based", "gradient-adam", dict(GRADIENT_SCHEDULED)),
                 ("Grad-free", "gradfree-adam", dict(GRADFREE_ADAM)))
"""(label, `decinv.invert` method, options) of Table 2's three columns; the iterative ones run `DINV_STEPS`."""

ORACLES = ("True z_T", "True z_0 + diffusion inv.")
"""Reference rows without decoder inversion: the injected noise itself, and the diffusion inversion of the true z_0."""

# ------------------------------------------------------------------------------------------------------ checks


def _check_pipeline(pipeline):
    """The `decinv.generation.pipelines.TextToImage` of a diffusion or rectified-flow protocol, else ValueError/TypeError."""

    if not isinstance(pipeline, TextToImage) or isinstance(pipeline, TextToVideo):
        raise TypeError(f"expected a decinv.generation.pipelines.TextToImage (load_profile('sd21' or 'sd15')), got "
                        f"{type(pipeline).__name__}; the tiny LDM: watermark_ldm(pipeline).")
    if pipeline.protocol.kind not in WATERMARK_GUIDANCE:
        raise ValueError(f"protocol kind {pipeline.protocol.kind!r} has no watermark inversion; choose a "
                         f"{' or '.join(WATERMARK_GUIDANCE)} protocol.")
    return pipeline


def latent_shape(pipeline) -> tuple[int, int, int]:
    """(C, h, w) of the pipeline's initial noise: the UNet's input channels and the image size / 8 (4, 64, 64)."""
    height, width = pipeline.size
    f = int(pipeline.pipe.vae_scale_factor)
    if height % f or width % f:
        raise ValueError(f"image size {height}x{width} is not divisible by the VAE's downsampling {f}.")
    return int(pipeline.pipe.unet.config.in_channels), height // f, width // f


def _shape(pipeline) -> tuple[int, int, int]:
    """(C, h, w) of a `watermark_ldm` (its ``latent_shape``) or of a real pipeline (`latent_shape`)."""
    shape = getattr(pipeline, "latent_shape", None)
    return tuple(shape) if isinstance(shape, tuple) else latent_shape(_check_pipeline(pipeline))


def _check_latents(pipeline, z: torch.Tensor, name: str, batch: int | None = None) -> torch.Tensor:
    """z as a finite floating (B, C, h, w) latent of the pipeline's shape, else ValueError."""
    shape = latent_shape(pipeline)
    if not isinstance(z, torch.Tensor) or z.ndim != 4 or tuple(z.shape[1:]) != shape:
        raise ValueError(f"{name} must be a (B, {', '.join(map(str, shape))}) latent for this pipeline, got "
                         f"{tuple(getattr(z, 'shape', ())) or type(z).__name__}.")
    if batch is not None and len(z) != batch:
        raise ValueError(f"{name} holds {len(z)} latents but {batch} prompt(s) were given (one prompt per latent).")
    if not z.is_floating_point() or not torch.isfinite(z).all():
        raise ValueError(f"{name} must be finite and floating point, got dtype {z.dtype}.")
    return z


def _prompts(prompts) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or any(not isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty string or list of strings (one per latent).")
    return prompts


def _steps(pipeline, steps) -> int:
    steps = pipeline.protocol.steps if steps is None and pipeline is not None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    return steps


def _guidance(pipeline, guidance_scale) -> float:
    w = WATERMARK_GUIDANCE[pipeline.protocol.kind] if guidance_scale is None else float(guidance_scale)
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"guidance_scale must be a finite non-negative number, got {guidance_scale!r}.")
    return w


# ---------------------------------------------------------------------------------------------------- the model


def _embeddings(pipe, prompts: list[str], guided: bool):
    """(cond (B, 77, d), uncond (B, 77, d) or None): ``encode_prompt`` as the pipeline's own call does it
    (the empty negative prompt for the unconditional branch)."""
    cond, uncond = pipe.encode_prompt(prompts, pipe.unet.device, 1, guided)
    return cond, (uncond if guided else None)


# ----------------------------------------------------------------------------------------------------- generate


def generate_watermarked(pipeline, z_T: torch.Tensor, prompt: str, *, guidance_scale: float | None = None):
    """One watermarked image from the given initial noise: returns (x (1, 3, H, W) float32 in [−1, 1], the 8-bit
    image the pipeline saves, reloaded; z_0 (1, C, h, w), the latent it was decoded from).

    SD 2.1: the ``StableDiffusionPipeline`` call with ``latents=z_T`` (scaled by the scheduler's
    ``init_noise_sigma`` = 1), the protocol's scheduler and steps; InstaFlow: z_0 = z_T + v(z_T, 1000, c) (one Euler
    step). ``guidance_scale``: None → `WATERMARK_GUIDANCE` (7.5 SD, 1.0 InstaFlow). Deterministic given z_T."""
    _check_pipeline(pipeline)
    _check_latents(pipeline, z_T, "z_T", batch=1)
    x, z0, _ = pipeline.generate(_prompts(prompt)[0], 0, latents=z_T, guidance_scale=_guidance(pipeline,
                                                                                                  guidance_scale))
    return x, z0


# ------------------------------------------------------------------------------------------------------- invert


@torch.no_grad()
def ddim_invert_guided(pipeline, z0: torch.Tensor, prompts, *, guidance_scale: float | None = None,
                       steps: int | None = None, progress: bool = False) -> torch.Tensor:
    """Naïve DDIM inversion z_0 → z_T of the pipeline's first-order sampler, with the prompt and CFG.

    With the scheduler's grid t_0 > … > t_{N−1} and noise levels σ_k = √((1 − ᾱ)/ᾱ) at t_k (σ_N = 0 after the last
    step), the VE variable y = z √(1 + σ²) makes the sampler's DPM-Solver++(1) (= DDIM) step an Euler step in σ:

        sampling:   y_{k+1} = y_k + (σ_{k+1} − σ_k) ε(z_k, t_k)
        inversion:  y_k     = y_{k+1} + (σ_k − σ_{k+1}) ε(z_{k+1}, t_k),   k = N−1, …, 0

    ε = ε_u + w (ε_c − ε_u) (`guided_output`) with the *true* prompts (the paper's ``--prompt_unknown`` is off).
    The inversion is naïve: it evaluates ε at the latent it has (z_{k+1}) instead of the unknown z_k, with the
    target step's timestep label, as diffusers' ``DDIMInverseScheduler`` and the official code do; it is exact when
    ε does not depend on the latent, and its error grows with ε's sensitivity to z and with w. The grid is the
    sampler's own (``scheduler.timesteps``/``sigmas`` after ``set_timesteps(steps)`` on a copy), so no grid mismatch
    adds to that error.

    ``z0`` (B, C, h, w), ``prompts`` B strings (one per latent), ``steps`` None → the protocol's (50);
    returns ẑ_T (B, C, h, w) in z0's dtype. Raises ValueError unless the scheduler is a first-order, ε-predicting
    ``DPMSolverMultistepScheduler`` (the paper's), and `decinv.core.validation.UnsupportedConfigError` for settings under
    which its sampling is not the update above: ``thresholding=True`` (it rescales each predicted z_0, which the
    inversion cannot undo), an SDE ``algorithm_type`` (it adds noise), ``rescale_betas_zero_snr=True`` (σ = ∞ at the
    first step) or a non-finite σ on the grid."""
    _check_pipeline(pipeline)
    prompts = _prompts(prompts)
    _check_latents(pipeline, z0, "z0", batch=len(prompts))
    pipe, w, steps = pipeline.pipe, _guidance(pipeline, guidance_scale), _steps(pipeline, steps)
    config = pipe.scheduler.config
    if (type(pipe.scheduler).__name__ != "DPMSolverMultistepScheduler" or config.solver_order != 1
            or config.algorithm_type not in ("dpmsolver++", "dpmsolver") or config.prediction_type != "epsilon"):
        raise ValueError(f"naive DDIM inversion inverts the paper's sampler, a first-order epsilon-predicting "
                         f"DPMSolverMultistepScheduler; this pipeline has {type(pipe.scheduler).__name__} "
                         f"(solver_order={config.get('solver_order')}, prediction_type={config.prediction_type}).")
    if config.get("thresholding", False):
        raise UnsupportedConfigError(
            "the pipeline's DPMSolverMultistepScheduler has thresholding=True: sampling rescales each predicted z_0 "
            "by a per-sample percentile (meant for pixel-space models), which naive inversion cannot undo. Use "
            "thresholding=False (decinv.generation.pipelines.paper_scheduler does).")
    if config.get("rescale_betas_zero_snr", False):
        raise UnsupportedConfigError(
            "the pipeline's DPMSolverMultistepScheduler has rescale_betas_zero_snr=True: at zero terminal SNR the "
            "first noise level is infinite and the epsilon-prediction update divides by zero. Use "
            "rescale_betas_zero_snr=False (decinv.generation.pipelines.paper_scheduler does).")
    scheduler = type(pipe.scheduler).from_config(config)
    scheduler.set_timesteps(steps, device=pipe.unet.device)
    timesteps, sigmas = scheduler.timesteps, [float(s) for s in scheduler.sigmas]
    if not all(math.isfinite(s) for s in sigmas[: steps + 1]):
        raise UnsupportedConfigError(f"the scheduler's noise levels on its {steps}-step grid are not all finite "
                                     f"({sigmas[:3]}...); check its beta schedule and timestep settings.")
    with pipeline.guard("ddim_invert_guided"):
        cond, uncond = _embeddings(pipe, prompts, w > 1.0)
        z = z0.to(pipe.unet.device, pipe.unet.dtype)
        for k in progress_bar(range(steps - 1, -1, -1), desc="DDIM inversion", enabled=progress):
            eps = guided_output(pipe.unet, z, timesteps[k], cond, uncond, w)
            scale_next, scale_k = math.sqrt(1 + sigmas[k + 1] ** 2), math.sqrt(1 + sigmas[k] ** 2)
            z = (z * scale_next + (sigmas[k] - sigmas[k + 1]) * eps) / scale_k
    return z.to(z0.dtype)


@torch.no_grad()
def backward_euler(velocity, z0: torch.Tensor, steps: int = 1, iterations: int = EULER_ITERATIONS) -> torch.Tensor:
    """Invert N Euler steps of a flow (Algorithm 1, backward Euler, of Hong et al. 2023, "On exact inversion of
    DPM-solvers") by fixed-point iteration. The sampler runs, for i = 0..N−1 with t_i = 1000 (1 − i/N),

        z_{i+1} = z_i + v(z_i, t_i) / N;

    its inverse solves that equation for z_i given z_{i+1}, i = N−1..0, by

        z_i ← z_{i+1} − v(z_i, t_i) / N,   ``iterations`` times, starting from z_i = z_{i+1}.

    This converges (Banach) when z ↦ v(z, t_i)/N is a contraction, i.e. v is L-Lipschitz in z with L/N < 1; the
    error then shrinks like (L/N)^k. A v that does not depend on z is solved exactly by the first iteration. InstaFlow
    has N = 1 (z_T from z_0).

    ``velocity(z, t)`` → v with z's shape (``t`` a float); ``z0`` (B, ...) the sampler's output; returns ẑ_T."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}.")
    z = z0
    for i in range(steps - 1, -1, -1):
        t, target = 1000.0 * (1 - i / steps), z
        for _ in range(iterations):
            z = target - velocity(z, t) / steps
    return z


@torch.no_grad()
def invert_flow(pipeline, z0: torch.Tensor, prompts, *, guidance_scale: float | None = None, steps: int | None = None,
                iterations: int = EULER_ITERATIONS) -> torch.Tensor:
    """Backward-Euler inversion (`backward_euler`) of the pipeline's rectified flow with the prompts and CFG
    (1.0 for InstaFlow: the text branch only). ``z0`` (B, C, h, w), one prompt per latent; returns ẑ_T."""
    _check_pipeline(pipeline)
    prompts = _prompts(prompts)
    _check_latents(pipeline, z0, "z0", batch=len(prompts))
    pipe, w, steps = pipeline.pipe, _guidance(pipeline, guidance_scale), _steps(pipeline, steps)
    device = pipe.unet.device
    with pipeline.guard("invert_flow"):
        cond, uncond = _embeddings(pipe, prompts, w > 1.0)

        def velocity(z, t):
            return guided_output(pipe.unet, z, torch.tensor(t, device=device, dtype=torch.float32), cond, uncond, w)

        return backward_euler(velocity, z0.to(device, pipe.unet.dtype), steps, iterations).to(z0.dtype)


def invert_diffusion(pipeline, z0: torch.Tensor, prompts, *, guidance_scale: float | None = None,
                     steps: int | None = None, iterations: int = EULER_ITERATIONS) -> torch.Tensor:
    """z_0 → ẑ_T by the paper's diffusion inversion for the pipeline's protocol: `ddim_invert_guided` (SD 2.1) or
    `invert_flow` (InstaFlow; ``iterations`` fixed-point iterations). Shapes (B, C, h, w), one prompt per latent.
    Each latent counts as one ``diffusion_inversion`` (`decinv.core.work`), as the tiny LDM's `ddim_invert` does."""
    _check_pipeline(pipeline)
    work.add(work.DIFFUSION_INVERSION, len(z0))
    if pipeline.protocol.kind == "diffusion":
        return ddim_invert_guided(pipeline, z0, prompts, guidance_scale=guidance_scale, steps=steps)
    return invert_flow(pipeline, z0, prompts, guidance_scale=guidance_scale, steps=steps, iterations=iterations)


# ------------------------------------------------------------------------------------------- one interface


@dataclass
class GuidedLDM:
    """A text-to-image pipeline behind the interface of `decinv.generation.experiments.TinyLDM`, with the watermark
    protocol's guidance, steps and backward-Euler iterations: ``generate(z_T, prompts)`` → (x, z_0) one image at a
    time (`generate_watermarked`), ``invert_diffusion(z_0, prompts)`` → ẑ_T (`invert_diffusion`)."""

    pipeline: object
    guidance_scale: float
    steps: int
    iterations: int = EULER_ITERATIONS

    @property
    def vae(self):
        return self.pipeline.vae

    conditional = True  # the prompts reach the UNet (CFG)

    @property
    def description(self) -> str:
        """One line for records (a job's settings): protocol, kind and where the pipeline came from."""
        p = self.pipeline
        return f"{p.protocol.name} ({p.protocol.kind}) from {p.source}"

    @property
    def name(self) -> str:
        return self.pipeline.protocol.name

    @property
    def unet(self):
        return self.pipeline.pipe.unet

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return latent_shape(self.pipeline)

    def generate(self, z_T: torch.Tensor, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = _prompts(prompts)
        _check_latents(self.pipeline, z_T, "z_T", batch=len(prompts))
        pairs = [generate_watermarked(self.pipeline, z[None], p, guidance_scale=self.guidance_scale)
                 for z, p in zip(z_T, prompts)]
        return torch.cat([x for x, _ in pairs]), torch.cat([z for _, z in pairs])

    def invert_diffusion(self, z_0: torch.Tensor, prompts) -> torch.Tensor:
        return invert_diffusion(self.pipeline, z_0, prompts, guidance_scale=self.guidance_scale, steps=self.steps,
                                iterations=self.iterations)


def watermark_ldm(pipeline, *, guidance_scale: float | None = None, steps: int | None = None,
                  iterations: int = EULER_ITERATIONS):
    """The LDM ``run_watermark`` drives, for any profile: a real pipeline (`decinv.generation.pipelines.TextToImage`,
    ``load_profile("sd21" or "sd15")``) becomes a `GuidedLDM` (``guidance_scale``/``steps`` None: the watermark
    protocol's); the bundled tiny LDM (``load_profile("tiny")``'s pipeline, or a `decinv.generation.experiments.TinyLDM`)
    a `TinyLDM` sampling and inverting with ``steps`` DDIM steps (None: 50, the paper's). Both have ``vae``,
    ``name``, ``latent_shape``, ``generate(z_T, prompts)`` → (x, z_0) and ``invert_diffusion(z_0, prompts)``."""

    if isinstance(pipeline, TinyLDM):
        return pipeline if steps is None else TinyLDM(pipeline.vae, pipeline.unet, pipeline.scheduler, steps,
                                                      pipeline.name)
    if not isinstance(pipeline, TextToImage) and all(hasattr(pipeline, a) for a in ("vae", "unet", "scheduler")):
        return TinyLDM.from_pipeline(pipeline, 50 if steps is None else _steps(None, steps))
    _check_pipeline(pipeline)
    w, steps = _guidance(pipeline, guidance_scale), _steps(pipeline, steps)
    if steps != pipeline.protocol.steps:  # the sampler runs the protocol's steps; the inversion then matches it
        pipeline = pipeline.with_protocol(steps=steps)
    return GuidedLDM(pipeline, w, steps, iterations)


# ------------------------------------------------------------------------------------------------------ the run


def watermark_keys(pipeline, radius: int = 6, *, centred_on_dc: bool = False, key_scale: float | None = None):
    """(keys (3, s, s) complex64, disc mask (s, s) bool) on the pipeline's s×s latent (s = 64 at 512²).

    ``key_scale``: multiplies the ring values; None → s/64 (1 for the paper's latent; keeps the per-coefficient
    watermark-to-noise ratio on smaller test latents). Raises ValueError for a non-square latent or a radius that
    does not fit (`decinv.applications.watermark.make_keys`). ``pipeline``: a real pipeline or any `watermark_ldm`."""
    _, h, w = _shape(pipeline)
    if h != w:
        raise ValueError(f"tree-ring keys need a square latent, this pipeline's is {h}x{w} (image {pipeline.size}).")
    keys, mask = wm.make_keys(h, radius, centred_on_dc=centred_on_dc)
    return keys * (h / 64 if key_scale is None else float(key_scale)), mask


def watermarked_noises(pipeline, seed: int, keys: torch.Tensor, mask: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """(3, C, h, w) float32 CPU: three independent N(0, I) noises drawn from ``torch.Generator("cpu").manual_seed(seed)``
    (one ``randn`` call), noise w carrying key w (`decinv.applications.watermark.inject`; other channels untouched)."""
    noise = torch.randn((3, *_shape(pipeline)), generator=torch.Generator("cpu").manual_seed(int(seed)),
                        dtype=torch.float32)
    return wm.inject(noise, keys[:3], mask, channel)


@dataclass
class WatermarkRun:
    """What `run_watermark` measured on 3N images (image j: prompt j // 3, key ``labels[j]`` = j % 3).

    ``predictions[label]`` (3N,) predicted key per decoder-inversion method and per oracle (`ORACLES`);
    ``seconds``/``peak_memory_bytes``/``z0_nmse_db``/``zT_nmse_db``/``pixel_psnr_db``: (3N,) per image for the
    decoder-inversion methods (time and memory of decoder + diffusion inversion, per image of its batch; memory NaN
    where unavailable, see ``memory_kind``; pixel PSNR of D(ẑ_0) against the 8-bit x). ``z_T``, ``z0``: the
    watermarked noises and the latents generated from them, (3N, C, h, w) float32 on the CPU. ``failed``: per
    method, the statuses of the inversions that failed (`decinv.invert`'s ``status``).
    """

    protocol: str
    device: str
    labels: np.ndarray
    prompts: list
    seeds: list
    methods: list
    predictions: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    peak_memory_bytes: dict = field(default_factory=dict)
    z0_nmse_db: dict = field(default_factory=dict)
    zT_nmse_db: dict = field(default_factory=dict)
    pixel_psnr_db: dict = field(default_factory=dict)
    memory_kind: str = ""
    settings: dict = field(default_factory=dict)
    z_T: torch.Tensor | None = field(default=None, repr=False)
    z0: torch.Tensor | None = field(default=None, repr=False)
    failed: dict = field(default_factory=dict)

    def confusion_matrix(self, label: str) -> np.ndarray:
        """(3, 3) counts, rows = actual key, columns = predicted (Fig. S1's layout); sums to 3N."""
        if label not in self.predictions:
            raise KeyError(f"no method {label!r} in this run; it has {', '.join(self.predictions)}.")
        return wm.confusion_matrix(self.labels, self.predictions[label])

    def confusion_matrices(self) -> dict:
        """{label: (3, 3) counts} for every method and oracle, in run order."""
        return {label: self.confusion_matrix(label) for label in self.predictions}

    def table(self):
        """pandas DataFrame, one row per method/oracle: correct, images, accuracy with its 95 % Wilson interval
        (ci low, ci high; `decinv.applications.watermark.wilson_interval`), mean s per image, mean peak memory (GB = 1e9 bytes),
        mean z_0 and z_T NMSE (dB), mean pixel PSNR (dB); cost and fit columns are NaN for the oracles."""
        import pandas as pd

        rows = {}
        for label, cm in self.confusion_matrices().items():
            memory = self.peak_memory_bytes.get(label)
            k, n = int(np.trace(cm)), int(cm.sum())
            low, high = wm.wilson_interval(k, n)
            rows[label] = {"correct": k, "images": n, "accuracy": wm.accuracy(cm), "ci low": low, "ci high": high,
                           "s per image": _mean(self.seconds.get(label)),
                           "peak memory (GB)": _mean(memory) / 1e9 if memory is not None else np.nan,
                           "z0 NMSE (dB)": _mean(self.z0_nmse_db.get(label)),
                           "zT NMSE (dB)": _mean(self.zT_nmse_db.get(label)),
                           "pixel PSNR (dB)": _mean(self.pixel_psnr_db.get(label))}
        return pd.DataFrame.from_dict(rows, orient="index")


def _mean(values) -> float:
    return float(np.nanmean(values)) if values is not None and len(values) and not np.isnan(values).all() else np.nan


MEMORY_PROBE_ITERATIONS = 5
"""With ``batch`` > 1, `run_watermark` measures peak memory on one image with at most this many decoder-inversion
iterations (neither method's memory grows with the iteration count): the paper inverted one image at a time."""


def run_watermark(pipeline, prompts, *, seed: int = 0, methods=PAPER_METHODS, dinv_steps: int = DINV_STEPS,
                  radius: int = 6, channel: int = 0, centred_on_dc: bool = False, key_scale: float | None = None,
                  guidance_scale: float | None = None, steps: int | None = None,
                  iterations: int = EULER_ITERATIONS, oracles: bool = True, batch: int | None = None,
                  progress: bool = True) -> WatermarkRun:
    """The paper's Table 2 experiment: N prompts × 3 keys, each image inverted by every decoder-inversion method.

    One protocol for every profile: ``pipeline`` is what ``load_profile`` returns (SD 2.1 / InstaFlow or the
    bundled tiny LDM) and is driven through `watermark_ldm`. For prompt i, three noises come from seed
    ``seed + i``, noise w carrying key w (`watermarked_noises` with `watermark_keys`, in ``channel``); each is
    generated with prompt i (``ldm.generate``), and for each (label, method, options) of ``methods`` the 8-bit image
    is inverted (``decinv.invert`` with ``dinv_steps`` iterations, 0 for the encoder; the pipeline's dtype), then
    the diffusion (``ldm.invert_diffusion`` with the true prompt), and ẑ_T is classified
    (`decinv.applications.watermark.classify`). Time and peak memory cover decoder + diffusion inversion
    (`decinv.core.measure.measure`; ``invert`` measures inside it too, which is harmless: its reset happens at the start
    of the outer block). ``oracles``: also classify the true z_T and the diffusion inversion of the true z_0 (no
    cost recorded).

    ``batch``: images generated and inverted together (None: one at a time on a real pipeline, as the paper
    measured; all 3N at once on the tiny LDM, as a CPU runs it best). The time per image is then the batch's time / its size, and the peak memory is
    measured apart on the batch's first image with at most `MEMORY_PROBE_ITERATIONS` iterations.

    ``prompts``: a list of N prompt strings, or the number N: the paper's first N prompts
    (`decinv.generation.pipelines.load_prompts`) on a real pipeline, N unconditional "prompts" (seeds) on the tiny LDM; ``steps``: sampler and inversion steps (None: the protocol's, 50 / 1; tiny 50);
    ``guidance_scale`` None: `WATERMARK_GUIDANCE`. Returns a `WatermarkRun`; ``run.confusion_matrix(label)`` sums
    to 3N."""
    ldm = watermark_ldm(pipeline, guidance_scale=guidance_scale, steps=steps, iterations=iterations)
    if isinstance(prompts, int) and not isinstance(prompts, bool):
        prompts = load_prompts(prompts) if isinstance(ldm, GuidedLDM) else [""] * prompts  # tiny: only seeds
    prompts = _prompts(prompts)
    if batch is None:
        batch = 1 if isinstance(ldm, GuidedLDM) else 3 * len(prompts)
    for name, value in (("dinv_steps", dinv_steps), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    methods = [tuple(m) for m in methods]
    if not methods or any(len(m) != 3 for m in methods) or len({m[0] for m in methods}) != len(methods):
        raise ValueError("methods must be distinct (label, decinv method, options) triples.")
    keys, mask = watermark_keys(ldm, radius, centred_on_dc=centred_on_dc, key_scale=key_scale)
    model = ldm.vae
    if not -ldm.latent_shape[0] <= channel < ldm.latent_shape[0]:
        raise ValueError(f"channel {channel} out of range for {ldm.latent_shape[0]} latent channels.")
    labels = [m[0] for m in methods] + (list(ORACLES) if oracles else [])
    settings = dict(steps=ldm.steps, dinv_steps=dinv_steps, radius=radius, channel=channel,
                    centred_on_dc=centred_on_dc, batch=batch, dtype=str(model.dtype))
    if isinstance(ldm, GuidedLDM):
        settings.update(guidance_scale=ldm.guidance_scale, iterations=iterations)
    run = WatermarkRun(protocol=ldm.name, device=str(model.device), labels=np.tile(np.arange(3), len(prompts)),
                       prompts=prompts, seeds=[seed + i for i in range(len(prompts))], methods=labels,
                       settings=settings)
    per_image = {name: {label: [] for label in labels} for name in
                 ("predictions", "seconds", "peak_memory_bytes", "z0_nmse_db", "zT_nmse_db", "pixel_psnr_db")}
    keys_dev = keys.to(model.device)
    z_T_all = torch.cat([watermarked_noises(ldm, seed + i, keys, mask, channel) for i in range(len(prompts))])
    prompt_of = [p for p in prompts for _ in range(3)]
    generated = []
    bar = progress_bar(total=len(z_T_all), desc=f"watermark {ldm.name}", enabled=progress)
    for start in range(0, len(z_T_all), batch):
        texts = prompt_of[start:start + batch]
        x, z0 = ldm.generate(z_T_all[start:start + batch], texts)
        z_T = z_T_all[start:start + batch].to(z0.device, z0.dtype)
        generated.append(z0.float().cpu())
        for label, method, options in methods:
            k = 0 if method == "encoder" else dinv_steps
            with measure(model.device) as cost:
                result = invert(x, model, method, k, z_true=z0, progress=False, **options)
                z_T_hat = ldm.invert_diffusion(result.z, texts)
            memory = cost.peak_memory_bytes
            if len(x) > 1:  # the per-image peak, apart (see MEMORY_PROBE_ITERATIONS)
                with measure(model.device) as probe:
                    one = invert(x[:1], model, method, min(k, MEMORY_PROBE_ITERATIONS), progress=False, **options)
                    ldm.invert_diffusion(one.z, texts[:1])
                memory = probe.peak_memory_bytes
            if result.failed:
                run.failed.setdefault(label, []).append(result.status)
            _record(per_image, label, z_T_hat, keys_dev, mask, channel, z0, z_T, result.z)
            fit = psnr(model.decode(result.z).float(), x.float())
            per_image["pixel_psnr_db"][label] += [float(v) for v in fit]
            per_image["seconds"][label] += [cost.seconds / len(x)] * len(x)
            per_image["peak_memory_bytes"][label] += [np.nan if memory is None else float(memory)] * len(x)
            run.memory_kind = cost.memory_kind
        if oracles:
            _record(per_image, ORACLES[0], z_T, keys_dev, mask, channel, z0, z_T, None)
            _record(per_image, ORACLES[1], ldm.invert_diffusion(z0, texts), keys_dev, mask, channel, z0, z_T, None)
        bar.update(len(x))
    bar.close()
    for name, values in per_image.items():
        setattr(run, name, {label: np.asarray(v, dtype=np.int64 if name == "predictions" else np.float64)
                            for label, v in values.items() if len(v)})
    run.z_T, run.z0 = z_T_all, torch.cat(generated)
    return run


def read_back(ldm, z0: torch.Tensor, prompts, keys: torch.Tensor, mask: torch.Tensor, channel: int = 0,
              batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted keys (B,), ẑ_T (B, C, h, w) float32 CPU): diffusion inversion of ``z0`` (B, C, h, w) with one
    prompt per latent by a `watermark_ldm`, in chunks of ``batch`` (None: all at once), then the nearest key."""
    batch = len(z0) if batch is None else batch
    z_T_hat = torch.cat([ldm.invert_diffusion(z0[i:i + batch].to(ldm.vae.device, ldm.vae.dtype),
                                              list(prompts[i:i + batch])).float().cpu()
                         for i in range(0, len(z0), batch)])
    return wm.classify(z_T_hat, keys.cpu(), mask, channel), z_T_hat


def _record(per_image, label, z_T_hat, keys, mask, channel, z0, z_T, z0_hat):
    """Append the predictions and the z_0 / z_T NMSE (dB) of a batch of images to ``per_image[...][label]`` (z_0
    NMSE NaN for an oracle, ``z0_hat`` None: it starts from the true z_0; z_T NMSE NaN for the true z_T itself)."""
    per_image["predictions"][label] += [int(k) for k in wm.classify(z_T_hat.float(), keys, mask, channel)]
    nan = [np.nan] * len(z0)
    per_image["z0_nmse_db"][label] += nan if z0_hat is None else nmse_db(z0_hat.float(), z0.float()).tolist()
    per_image["zT_nmse_db"][label] += nan if z_T_hat is z_T else nmse_db(z_T_hat.float(), z_T.float()).tolist()


# ------------------------------------------------------------------------------------------------ beside the paper


def paper_model(protocol: str) -> str:
    """The paper's name ("SD2.1", "InstaFlow") for a protocol name ("sd21", "instaflow"), else ValueError."""
    if protocol not in PAPER_PROTOCOL_MODEL:
        raise ValueError(f"the paper's Table 2 has no {protocol!r}; it has {', '.join(PAPER_PROTOCOL_MODEL)}.")
    return PAPER_PROTOCOL_MODEL[protocol]


def compare_with_paper(run: WatermarkRun):
    """pandas DataFrame, rows Encoder / Grad-based / Grad-free: the paper's Table 2 (notes §5.7; 300 images,
    GPU, absolute CUDA memory) beside this run's accuracy ("k/n"), mean runtime (s) and mean peak memory (GB) per
    image. Methods this run lacks get NaN/"–"; the memory column's meaning is ``run.memory_kind``."""
    import pandas as pd

    paper, ours = PAPER_TABLE2[paper_model(run.protocol)], run.table()
    rows = {}
    for method in paper["accuracy"]:
        have = method in ours.index
        rows[method] = {
            "paper accuracy": f"{paper['accuracy'][method]}/300",
            "this run accuracy": f"{ours.loc[method, 'correct']}/{ours.loc[method, 'images']}" if have else "–",
            "paper runtime (s)": paper["runtime (s)"][method],
            "this run runtime (s)": ours.loc[method, "s per image"] if have else np.nan,
            "paper peak memory (GB)": paper["peak memory (GB)"][method],
            "this run peak memory (GB)": ours.loc[method, "peak memory (GB)"] if have else np.nan,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def paper_confusion(protocol: str) -> dict:
    """{method: (3, 3) int array} of the paper's Fig. S1 for a protocol name ("sd21" or "instaflow")."""
    return {m: np.array(cm) for m, cm in PAPER_FIG_S1[paper_model(protocol)].items()}
