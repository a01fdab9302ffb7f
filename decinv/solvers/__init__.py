"""Decoder inversion: find z with D(z) ~ x. One entry point, `invert`, and one module per method."""

from __future__ import annotations

import inspect

import torch

from decinv.measure import measure
from decinv.solvers.anderson import anderson
from decinv.solvers.encoder import encoder
from decinv.solvers.forward_step import forward_step
from decinv.solvers.gradfree_adam import gradfree_adam
from decinv.solvers.gradient_adam import gradient_adam
from decinv.solvers.inertial_km import inertial_km, km_condition
from decinv.solvers.result import InversionResult, Trace
from decinv.solvers.schedule import paper_schedule, warmup_cosine_schedule
from decinv.solvers.tracking import Problem, StepInfo, Tracker
from decinv.validation import check_images

METHODS = {
    "encoder": encoder,
    "forward-step": forward_step,
    "inertial-km": inertial_km,
    "gradfree-adam": gradfree_adam,
    "gradient-adam": gradient_adam,
    "anderson": anderson,
}
RESIDUAL_KIND = {"gradient-adam": "pixel ||D(z) - x||", "anderson": "latent ||T(z)|| at the last accepted iterate"}


def method_options(method: str) -> dict:
    """The keyword options a method accepts, with their defaults."""
    params = inspect.signature(METHODS[method]).parameters
    return {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def invert(x: torch.Tensor, model, method: str = "gradfree-adam", steps: int | None = None, *,
           z_true: torch.Tensor | None = None, tol: float | None = None, chunk_size: int | None = None,
           progress: bool = True, callback=None, **options) -> InversionResult:
    """Invert the decoder of ``model`` (a `decinv.LatentModel`) at images ``x`` in [-1, 1].

    ``x``: (B, 3, H, W), or video (B, F, 3, H, W) whose frames are inverted as a batch; the result keeps x's layout.
    For a temporal autoencoder (``model.temporal``, e.g. Wan's) each video is one item: F = 4k + 1 frames give a
    latent video (B, k + 1, C, h, w), and ``chunk_size`` counts whole videos.
    ``method``: "encoder" | "forward-step" | "inertial-km" | "gradfree-adam" | "gradient-adam" | "anderson" (beyond
    the paper: Anderson-accelerated forward step); ``steps``: iterations
    (default 100; the encoder takes none). Every method starts from E(x) and runs in the model's device and dtype.
    ``z_true``: the ground-truth latent, to trace NMSE. ``tol``: a sample whose residual falls below it is frozen
    (per-sample early stopping); the loop ends when all are. ``chunk_size``: images/frames per encoder/decoder call,
    to bound memory (default: ``model.chunk_size``, None for a model you load, set by the hub profiles).
    ``callback(StepInfo)`` runs after each iteration. Method options (``step_size``, ``alpha``,
    ``beta``, ``lr``, ``schedule``, ``memory``, ...) are listed by `method_options`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    unknown = set(options) - set(method_options(method))
    if unknown:
        raise TypeError(f"method {method!r} has no option(s) {', '.join(sorted(unknown))}; "
                        f"its options are {method_options(method)}.")
    steps = (0 if method == "encoder" else 100) if steps is None else steps
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
    if method == "encoder" and steps:
        raise ValueError("the encoder baseline takes no iterations; use steps=0 (or leave it out).")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}.")
    check_images(x, model.downsample)
    chunk_size = chunk_size if chunk_size is not None else getattr(model, "chunk_size", None)  # the model's default
    # A temporal (3-D causal) autoencoder maps a whole video to a latent video: one item is a video, not a frame.
    item = 4 if getattr(model, "temporal", False) else 3
    if item == 4 and x.dim() != 5:
        raise ValueError(f"{type(model.vae).__name__} is a video autoencoder: pass videos (B, F, 3, H, W), got "
                         f"shape {tuple(x.shape)}.")
    shape = x.shape[:-item]
    x4 = x.reshape(-1, *x.shape[-item:]).to(model.device, model.dtype)
    z_true4 = None
    if z_true is not None:
        if z_true.shape[:-item] != shape:
            raise ValueError(f"z_true has leading shape {tuple(z_true.shape[:-item])}, expected {tuple(shape)} "
                             f"(one latent per {'video' if item == 4 else 'image/frame'}).")
        z_true4 = z_true.reshape(-1, *z_true.shape[-item:]).to(model.device)

    with measure(model.device) as m:
        tracker = Tracker(steps, len(x4), method, model.device, residual_kind=RESIDUAL_KIND.get(method, "latent ||T(z)||"),
                          z_true=z_true4, tol=tol, callback=callback, progress=progress)
        problem = Problem(model, x4, model.encode(x4, chunk_size, check=False), chunk_size)
        with torch.no_grad():
            z = METHODS[method](problem, tracker, **options)
    return InversionResult(
        z=z.reshape(*shape, *z.shape[1:]), trace=tracker.trace(), method=method, dtype=model.dtype,
        status=tracker.status, seconds=m.seconds, peak_memory_bytes=m.peak_memory_bytes,
        memory_kind=m.memory_kind, info=tracker.info,
    )


__all__ = ["invert", "InversionResult", "Trace", "StepInfo", "METHODS", "method_options", "paper_schedule",
           "warmup_cosine_schedule", "km_condition"]
