"""What the benchmark suites share: the environment record, clocks, medians and ratios, models and instances.

Every suite module (`decinv.bench.overhead`, ...) imports its helpers from here; the runner (`decinv.bench`)
imports the suites. Nothing here imports a suite or the runner, so the three layers have no import cycle.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging

import decinv
from decinv.generation.experiments import camera_pan, generated_instances, real_instances
from decinv.core.measure import cpu_name, environment, git_info, jsonable, synchronize  # noqa: F401  (re-exported)
from decinv.core.models import BUNDLED, LatentModel, ModelNotAvailableError, load_pipeline
from decinv.paper import PAPER_FIG3_MEMORY

SCHEMA = "decinv-bench/1"
MIB = 2**20
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_HALF_NOTE = ("CPU run: this CPU has no fast fp16/bf16 convolution kernels, so half-precision timings here are "
                 "NOT the paper's GPU claim (16-bit is faster on GPUs); only the accuracy and failure columns "
                 "carry over.")
PAPER_VIDEO_MEMORY_RATIO = (PAPER_FIG3_MEMORY["LaVie"][("gradfree-adam", 16)]
                            / PAPER_FIG3_MEMORY["LaVie"][("gradient-adam", 32)])  # LaVie, 7.13 / 64.7 GB (Fig. 3b)


# ---------------------------------------------------------------------------------------------------------------
# environment, timing, models


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``, with the device synchronised before and after."""
    synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu


def per_iteration(trace_seconds) -> float:
    """Seconds per iteration from a trace's cumulative clock: (t_K - t_1) / (K - 1).

    ``trace.seconds[k]`` is the time from the start of `decinv.invert` (before E(x)) to the end of iteration k, so
    the difference drops the initial E(x) and the first iteration (which also pays one-off allocations)."""
    s = np.asarray(trace_seconds, dtype=float)
    return float((s[-1] - s[0]) / (len(s) - 1)) if len(s) >= 2 else math.nan


def finite_median(values) -> float:
    """Median of the finite values (None, NaN and inf dropped); NaN when none is left."""
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.median(v)) if v else math.nan


def safe_ratio(a: float, b: float) -> float:
    """a / b, or NaN when b is 0 or either is not finite (a ratio row then reads "n/a", never inf)."""
    return float(a / b) if b and np.isfinite(a) and np.isfinite(b) else math.nan


@contextmanager
def quiet_diffusers():
    """Silence diffusers' 'modules that should be kept in float32' notice when casting models here."""
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def params_millions(model) -> float:
    """Parameters of the autoencoder (encoder and decoder), in millions."""
    return sum(p.numel() for p in model.vae.parameters()) / 1e6


def resolve_model(model, device, dtype=None, need_pipeline: bool = False):
    """(LatentModel, pipeline or None). ``model``: "tiny", any `decinv.load_model` source, or a LatentModel."""
    with quiet_diffusers():
        if isinstance(model, LatentModel):
            return model.to(device, dtype), None
        if need_pipeline and model in BUNDLED:
            try:
                pipeline = load_pipeline(model, device=device, dtype=dtype)
                return pipeline.vae, pipeline
            except ModelNotAvailableError:
                pass  # UNet not installed: fall back to on-manifold instances
        return decinv.load_model(model, device=device, dtype=dtype), None


def native_size(model) -> int:
    """Default image side for a suite: a bundled miniature's training size (v2: 128, v1: 64); 64 for any other
    model (hub autoencoders at 512 are GPU work; pass ``size`` for them)."""
    return int(model.vae.config.sample_size) if model.name in BUNDLED else 64


def model_info(model) -> dict:
    """What a suite records about the autoencoder it measured (name, size, downsampling, latent channels, dtype)."""
    return {"name": model.name, "repr": repr(model), "params_millions": round(params_millions(model), 4),
            "downsample": model.downsample, "latent_channels": model.latent_channels, "dtype": str(model.dtype)}


def pan_images(model, batch: int, size: int):
    """``batch`` 8-bit images (B, 3, size, size) and their latents: frames of a camera pan (real picture content)."""
    clip = camera_pan(model, batch, size, size)
    return clip.x[0], clip.z_true[0]


class NullModel:
    """Shapes of ``like`` without a network: E = strided subsampling, D = nearest upsampling (channels cycled).

    Running a solver on it measures the solver's own per-step bookkeeping (optimizer, clones, norms, finiteness
    check, trace) with the autoencoder's cost removed."""

    def __init__(self, like):
        self.downsample, self.latent_channels = like.downsample, like.latent_channels
        self.device, self.dtype = like.device, like.dtype

    def encode(self, x, chunk_size=None, *, check=True, finite=True):
        f, c = self.downsample, self.latent_channels
        return x[:, torch.arange(c) % x.shape[1], ::f, ::f].to(self.dtype)

    def decode(self, z, chunk_size=None, *, grad=False, check=True):
        f = self.downsample
        with torch.set_grad_enabled(grad):
            return z[:, torch.arange(3) % z.shape[1]].repeat_interleave(f, -2).repeat_interleave(f, -1)


def invert_clocked(x, model, method, steps, **kw):
    """`decinv.invert` without progress bar; also records the process CPU time (all threads) at the end of every
    iteration, counted from just before the call, as ``result.cpu_trace`` (and ``result.cpu_seconds`` in all).

    With one torch thread on a CPU, CPU time is what the wall time would be on an otherwise idle machine: a
    robust clock on a shared machine, where other processes inflate wall times at random."""
    cpu = []
    start = time.process_time()
    result = decinv.invert(x, model, method, steps, progress=False,
                           callback=lambda info: cpu.append(time.process_time() - start), **kw)
    result.cpu_seconds = time.process_time() - start
    result.cpu_trace = np.asarray(cpu[: len(result.trace)], dtype=float)
    return result


# ---------------------------------------------------------------------------------------------------------------
# ratio rows and instances


def fmt(v, digits: int = 2) -> str:
    """A number with ``digits`` decimals for a ratio row's note; "n/a" for None, NaN, inf or a non-number."""
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else "n/a"


def ratio_row(suite, name, value, target, note="") -> dict:
    """One row of a suite's ``ratios`` list: the measured ``value`` (a float, or None / a string), the ``target``
    it is compared with and a ``note`` on how it was measured; `decinv.bench.format_table` prints these rows."""
    value = float(value) if value is not None and not isinstance(value, str) else value
    return {"suite": suite, "ratio": name, "value": value, "target": target, "note": note}


def instances(model, pipeline, n: int, seed: int, size: int):
    """Generated instances at the pipeline's own size when there is a pipeline, else on-manifold size x size crops."""
    if pipeline is not None:
        return generated_instances(model, pipeline, n, seed)
    return real_instances(model, n, size, size, seed)


def pan_clip(model, frames: int, size: int):
    """A camera-pan video of ``frames`` frames of size x size (`decinv.generation.experiments.camera_pan`)."""
    return camera_pan(model, frames, size, size)


# ---------------------------------------------------------------------------------------------------------------
# saving
