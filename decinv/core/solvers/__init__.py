"""Decoder inversion: find z with D(z) ~ x. One entry point, `invert`, and one module per method."""

from __future__ import annotations

import inspect
import math
import numbers

import torch

from decinv.core import ambient, work
from decinv.core.measure import measure
from decinv.core.solvers.anderson import anderson
from decinv.core.solvers.encoder import encoder
from decinv.core.solvers.forward_step import forward_step
from decinv.core.solvers.gradfree_adam import gradfree_adam
from decinv.core.solvers.gradient_adam import gradient_adam
from decinv.core.solvers.inertial_km import inertial_km, km_condition
from decinv.core.solvers.result import InversionResult, Trace
from decinv.core.solvers.schedule import paper_schedule, warmup_cosine_schedule
from decinv.core.solvers.tracking import StepInfo, Tracker
from decinv.core.solvers.operator import Operator, operator
from decinv.core.validation import check_images, check_integer, check_model

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


def _number(value, name: str, *, low: float = 0.0, strict: bool = True, high: float | None = None,
            none: bool = False):
    if value is None and none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if strict else value >= low) and (high is None or value < high)
    if not ok:
        span = f"{'>' if strict else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be a finite number {span}{' or None' if none else ''}, got {value!r}.")
    return float(value)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64, "fp64": torch.float64}


def _dtype(value, name: str):
    if value is None or (isinstance(value, torch.dtype) and value.is_floating_point):
        return value
    if isinstance(value, str) and value.lower() in _DTYPES:
        return _DTYPES[value.lower()]
    raise ValueError(f"{name} must be a floating torch.dtype (e.g. torch.float32), one of {', '.join(_DTYPES)}, or "
                     f"None; got {value!r}.")


def _betas(value, name: str):
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1 for b in value)):
        return (float(value[0]), float(value[1]))
    raise ValueError(f"{name} must be two numbers in [0, 1), e.g. (0.9, 0.999), got {value!r}.")


def _flag(value, name: str):
    if isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be True or False, got {value!r}.")


OPTION_RULES = {
    "lr": lambda v, n: _number(v, n),
    "step_size": lambda v, n: _number(v, n),
    "alpha": lambda v, n: _number(v, n, strict=False, high=1.0),
    "beta": lambda v, n: _number(v, n, none=True),
    "schedule_cap": lambda v, n: check_integer(v, n, 1, none=True),
    "betas": _betas,
    "eps": lambda v, n: _number(v, n, strict=False, none=True),
    "master_dtype": _dtype,
    "memory": lambda v, n: check_integer(v, n, 0),
    "reg": lambda v, n: _number(v, n, strict=False),
    "safeguard": _flag,
}
"""The valid values of every method option (``schedule`` is checked by its method, which knows its names)."""


def check_options(method: str, options: dict) -> dict:
    """``options`` for ``method`` with every value checked (`OPTION_RULES`) and normalised (numbers to float or int,
    dtype names such as "float16" to torch dtypes): a `ValueError` naming the option and its valid values, or a
    `TypeError` for an option the method does not have. `invert` calls it; the command line calls it before a job
    starts, so that a bad ``-o KEY=VALUE`` is refused before any model is loaded."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    known = method_options(method)
    unknown = set(options) - set(known)
    if unknown:
        raise TypeError(f"method {method!r} has no option(s) {', '.join(sorted(unknown))}; "
                        f"its options are {known}.")
    checked = {}
    for name, value in options.items():
        if name == "schedule":  # the method's own schedule or None (a fixed step)
            if value not in (known["schedule"], None):
                raise ValueError(f"{method} option schedule must be {known['schedule']!r} or None (fixed), "
                                 f"got {value!r}.")
            checked[name] = value
            continue
        rule = OPTION_RULES.get(name)
        checked[name] = rule(value, f"{method} option {name}") if rule else value
    return checked


def check_steps(method: str, steps) -> int:
    """The iteration count ``invert`` runs for ``steps`` (None: 0 for the encoder, else 100): a `ValueError` for a
    negative or non-integer count, or for iterations asked of the encoder baseline. The command line calls it before
    a job starts."""
    steps = (0 if method == "encoder" else 100) if steps is None else steps
    steps = check_integer(steps, "steps", 0)
    if method == "encoder" and steps:
        raise ValueError("the encoder baseline takes no iterations; use steps=0 (or leave it out).")
    return steps


def _latent_shape(model, x: torch.Tensor, item: int) -> tuple | None:
    """The shape of one latent of x (C, h, w), or (k + 1, C, h, w) for a temporal autoencoder; None if unknown."""
    if not hasattr(model, "latent_channels"):
        return None
    f = model.downsample
    spatial = (model.latent_channels, x.shape[-2] // f, x.shape[-1] // f)
    return (model.latent_frames(x.shape[-4]), *spatial) if item == 4 else spatial


def _check_z_true(z_true, shape, item: int, latent: tuple | None) -> None:
    if not isinstance(z_true, torch.Tensor):
        raise TypeError(f"z_true must be a torch.Tensor or None, got {type(z_true).__name__}.")
    if z_true.dim() < item or z_true.shape[:-item] != shape:
        raise ValueError(f"z_true has shape {tuple(z_true.shape)}, expected leading shape {tuple(shape)} "
                         f"(one latent per {'video' if item == 4 else 'image/frame'}).")
    if latent is not None and tuple(z_true.shape[-item:]) != latent:
        raise ValueError(f"z_true has latents of shape {tuple(z_true.shape[-item:])}, but this model's latents for "
                         f"these images are {latent}.")
    if not z_true.is_floating_point() or z_true.layout != torch.strided:
        raise ValueError(f"z_true must be a dense floating-point tensor, got {z_true.dtype} ({z_true.layout}).")
    if not bool(torch.isfinite(z_true).all()):
        raise ValueError("z_true contains NaN or infinite values; pass the finite ground-truth latents.")


def invert(x: torch.Tensor, model, method: str = "gradfree-adam", steps: int | None = None, *,
           z_true: torch.Tensor | None = None, tol: float | None = None, chunk_size: int | None = None,
           progress: bool = True, callback=None, **options) -> InversionResult:
    """Invert the decoder of ``model`` (a `decinv.LatentModel`) at images ``x`` in [-1, 1] (not [0, 1]): find z
    with D(z) ~ x, driving T(z) = E(D(z)) - E(x) (`operator`, the paper's Eq. 6) to 0 from z_0 = E(x).

    Returns an `InversionResult`: ``z`` (B, C, H/f, W/f) with f = ``model.downsample``, C = ``model.latent_channels``
    (e.g. (B, 4, 16, 16) for the bundled 128x128 model), ``status``, ``trace`` (per-iteration residual, lr, time and,
    with ``z_true``, NMSE in dB), ``seconds``, ``peak_memory_bytes``, ``dtype``/``precision`` (what ran), ``info``.
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
    ``beta``, ``lr``, ``schedule``, ``memory``, ...) are listed by `method_options` and checked by `check_options`.

    The contract (README, "Input contract"): every argument is checked before any work, and a bad one raises a
    `ValueError` or `TypeError` that names it and what to pass; ``x`` and ``z_true`` are never modified (nor given a
    ``.grad``), nor is the model. The result's ``z`` is finite, and its ``status`` says whether every step ran
    ("completed"), every sample reached ``tol`` ("converged") or a non-finite value stopped the run ("failed: ...",
    ``z`` the last finite iterate). The caller's torch state does not change the result (`decinv.core.ambient`): the
    networks run in ``model.dtype`` even inside ``torch.autocast`` (with a warning), in eval mode, and the
    gradient-based method gets its autograd even inside ``torch.no_grad()``/``torch.inference_mode()``;
    ``result.precision`` records the arithmetic that ran (dtype, and TF32 or reduced-precision matmuls if allowed).
    """
    check_model(model)
    options = check_options(method, options)
    steps = check_steps(method, steps)
    chunk_size = check_integer(chunk_size, "chunk_size", 1, none=True)
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or math.isnan(tol) or tol < 0:
            raise ValueError(f"tol must be a non-negative number (a residual norm) or None, got {tol!r}.")
        tol = float(tol)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of one StepInfo, got {type(callback).__name__}.")
    if hasattr(model, "sync"):
        model.sync()  # dtype/device as the weights are now; refuses tiled encoding/decoding
    check_images(x, model.downsample)
    chunk_size = chunk_size if chunk_size is not None else getattr(model, "chunk_size", None)  # the model's default
    # A temporal (3-D causal) autoencoder maps a whole video to a latent video: one item is a video, not a frame.
    item = 4 if getattr(model, "temporal", False) else 3
    if item == 4 and x.dim() != 5:
        raise ValueError(f"{type(model.vae).__name__} is a video autoencoder: pass videos (B, F, 3, H, W), got "
                         f"shape {tuple(x.shape)}.")
    shape = x.shape[:-item]
    if z_true is not None:
        _check_z_true(z_true, shape, item, _latent_shape(model, x, item))
    with ambient.guarded(model.device, model.dtype, getattr(model, "vae", None), what="decinv.invert",
                         fix="load the model in it: decinv.load_model(..., dtype=torch.{dtype}) or "
                             "model.to(dtype=torch.{dtype})"), torch.inference_mode(False):
        # detached copies where needed: the caller's tensors get no .grad and are never written to; a tensor made
        # inside torch.inference_mode() cannot take part in the gradient-based method's autograd, so it is cloned.
        x4 = x.detach().reshape(-1, *x.shape[-item:]).to(model.device, model.dtype)
        x4 = x4.clone() if x4.is_inference() else x4
        z_true4 = None if z_true is None else z_true.detach().reshape(-1, *z_true.shape[-item:]).to(model.device)
        # decinv.core.work counts a gradient-free iteration's E(D(z)) where T evaluates it; a gradient-based one here
        gradient = method == "gradient-adam"
        kind = work.kind(gradient, model.dtype)
        with measure(model.device) as m:
            tracker = Tracker(steps, len(x4), method, model.device,
                              residual_kind=RESIDUAL_KIND.get(method, "latent ||T(z)||"), z_true=z_true4, tol=tol,
                              callback=callback, progress=progress, work_kind=kind if gradient else None)
            try:
                T = Operator(model, x4, model.encode(x4, chunk_size, check=False), chunk_size)
                with torch.no_grad():
                    z = METHODS[method](T, tracker, **options)
            except BaseException:  # an error (or Ctrl-C) inside a run: close its progress bar, then re-raise
                tracker.bar.close()
                raise
        work.add(kind, (steps - tracker.iterations) * len(x4), skipped=True)  # a run that stopped early
    return InversionResult(
        z=z.reshape(*shape, *z.shape[1:]), trace=tracker.trace(), method=method, dtype=model.dtype,
        status=tracker.status, seconds=m.seconds, peak_memory_bytes=m.peak_memory_bytes,
        memory_kind=m.memory_kind, info=tracker.info, precision=ambient.precision(model.device, model.dtype),
    )


__all__ = ["invert", "operator", "Operator", "InversionResult", "Trace", "StepInfo", "METHODS", "method_options", "check_options",
           "paper_schedule", "warmup_cosine_schedule", "km_condition"]
