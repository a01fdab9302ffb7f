"""What decinv does with the torch state a caller leaves switched on.

A latent inversion is a function of its arguments: the images, the model (its weights, dtype and device) and the
method's options. Global torch state that a training loop or a pipeline leaves on around the call must not change
that function silently. Each piece of state is handled one of three ways, and the README's "Input contract" section
lists them all:

* **switched off inside decinv, with a warning** when it would have changed the numbers: ``torch.autocast`` (CPU or
  CUDA, any dtype) would run the autoencoder or UNet in 16 bits while the model says float32 (`own_precision`); a
  module left in train mode is evaluated in eval mode and put back (`evaluating`; the warning comes when it has
  dropout or batch norm, whose outputs depend on the mode). Both warn with an `AmbientStateWarning` that says what
  was overridden and how to get what was probably meant.
* **switched off inside decinv, silently**, where the numbers do not change and only side effects would: weights
  that require grad are frozen during the call and restored (no ``.grad`` is written into the caller's model);
  ``torch.inference_mode`` and ``torch.no_grad`` are left for the one place that needs autograd, the gradient-based
  baseline's backward pass; anomaly detection is off inside that backward pass, so that a 16-bit overflow is
  reported by the result's status as it is without anomaly mode instead of raising from deep inside autograd
  (`autograd`).
* **honoured and recorded**: ``torch.set_default_dtype`` does not reach decinv's computations (every tensor decinv
  creates names its dtype; models loaded from files are float32 unless ``dtype`` is passed); deterministic-algorithms
  mode is honoured, and on CUDA refused up front when cuBLAS is not configured for it (`check_deterministic`);
  float32 matrix-product precision and TF32 settings are honoured and written into the result (`precision`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from contextvars import ContextVar

import torch

__all__ = ["AmbientStateWarning", "autocast_dtype", "own_precision", "evaluating", "autograd", "check_deterministic",
           "precision", "guarded"]


class AmbientStateWarning(UserWarning):
    """decinv overrode a piece of global torch state (autocast, train mode) that would have changed its result."""


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the decinv package (decinv/core/..)
_WRAPPERS = (contextlib.__file__, os.path.join("torch", "utils", "_contextlib.py"))  # decorators' frames


def _warn(message: str) -> None:
    """An `AmbientStateWarning` attributed to the first caller outside decinv (and the context-manager and
    ``@torch.no_grad`` wrappers), so that the warnings filter shows it once per place in the caller's code."""
    frame, level = sys._getframe(0), 1
    while frame is not None and (frame.f_code.co_filename.startswith(_HERE)
                                 or frame.f_code.co_filename.endswith(_WRAPPERS)):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, AmbientStateWarning, stacklevel=level)


def _depends_on_mode(module: torch.nn.Module) -> bool:
    """Whether a module's output is known to change with train mode: dropout with p > 0, or batch normalisation."""
    if isinstance(module, torch.nn.modules.dropout._DropoutNd):
        return module.p > 0
    return isinstance(module, torch.nn.modules.batchnorm._NormBase)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype of the ``torch.autocast`` region active for ``device_type`` ("cpu", "cuda", ...), or None."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # torch < 2.4 has no per-device query; an unknown device type has no autocast
        on = torch.is_autocast_cpu_enabled() if device_type == "cpu" else (
            device_type == "cuda" and torch.is_autocast_enabled())
    if not on:
        return None
    try:
        return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):
        return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()


@contextlib.contextmanager
def own_precision(device: torch.device | str, dtype: torch.dtype, what: str, fix: str):
    """Run the block without the caller's ``torch.autocast`` for ``device``, so that the networks compute in their
    own ``dtype``. If an autocast region was active, warn once: ``what`` ran in ``dtype``, not the autocast dtype, and
    ``fix`` says how to run in that dtype on purpose (e.g. load the model with ``dtype=``; ``{dtype}`` in it is
    replaced by the autocast dtype's name)."""
    device_type = torch.device(device).type
    cast = autocast_dtype(device_type)
    if cast is None:
        yield
        return
    _warn(f"{what} ran in {_name(dtype)}, not in the {_name(cast)} of the surrounding torch.autocast({device_type!r}): "
          f"decinv switches autocast off inside its calls, so that a result does not depend on the caller's context. "
          f"To compute in {_name(cast)}, {fix.format(dtype=_name(cast))}.")
    with torch.autocast(device_type, enabled=False):
        yield


_GUARDED: ContextVar[frozenset] = ContextVar("decinv_guarded_modules", default=frozenset())


def _train_state(modules) -> tuple[list, list]:
    """(submodules in train mode, parameters that require grad) of ``modules``, each once.

    What ``[sub for sub in m.modules() if sub.training]`` and ``[p for p in m.parameters() if p.requires_grad]``
    give, from one flat walk over the module tree (``Module._modules`` / ``_parameters``, the registries those
    methods read): their nested generators cost about 0.8 ms per call on the bundled VAE, paid at every E and D
    call, against about 0.05 ms here."""
    training, trainable, seen, stack = [], [], set(), list(modules)
    while stack:
        sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        if sub.training:
            training.append(sub)
        for p in sub._parameters.values():
            if p is not None and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                trainable.append(p)
        stack.extend(child for child in sub._modules.values() if child is not None)
    return training, trainable


@contextlib.contextmanager
def evaluating(*modules, what: str):
    """Evaluate ``modules`` (``torch.nn.Module`` or None) as decinv's results assume: in eval mode, weights frozen.

    Every submodule left in train mode is switched to eval mode for the block, with an `AmbientStateWarning` when
    one of them is a layer whose output depends on it (dropout with p > 0: random outputs; batch norm: batch
    statistics used and running statistics overwritten); other modules are switched silently, since train mode does
    not change what they compute (or only by round-off: a freshly built diffusers AutoencoderKL in train mode differs
    from eval mode by 1e-8). Weights that require grad are frozen for the block, so that a backward pass reaches the
    latent only and writes no ``.grad`` into the model. Both are restored afterwards, flag by flag. Nested calls on a
    module already guarded cost nothing."""
    done = _GUARDED.get()
    mods = [m for m in modules if m is not None and id(m) not in done]
    if not mods:
        yield
        return
    training, trainable = _train_state(mods)
    moded = [sub for sub in training if _depends_on_mode(sub)]
    if moded:
        kinds = sorted({type(sub).__name__ for sub in moded})
        _warn(f"{what}: the model is in train mode, with {len(moded)} layer(s) whose output depends on it "
              f"({', '.join(kinds)}); decinv evaluates it in eval mode (dropout off, batch-norm running statistics "
              "used and not updated) and puts it back in train mode afterwards. Call .eval() on the model to "
              "silence this.")
    for sub in training:
        sub.training = False
    for p in trainable:
        p.requires_grad_(False)
    token = _GUARDED.set(done | {id(m) for m in mods})
    try:
        yield
    finally:
        _GUARDED.reset(token)
        for sub in training:
            sub.training = True
        for p in trainable:
            p.requires_grad_(True)


@contextlib.contextmanager
def autograd():
    """Autograd for decinv's own graph (the gradient-based baseline's backward pass through D): on even inside the
    caller's ``torch.no_grad()`` or ``torch.inference_mode()``, with anomaly detection off, so that a non-finite
    gradient (16-bit overflow) reaches the solver's non-finite check and the result's status, as it does without
    anomaly mode, instead of raising inside autograd."""
    with torch.inference_mode(False), torch.enable_grad(), torch.autograd.set_detect_anomaly(False):
        yield


def check_deterministic(device: torch.device | str) -> None:
    """Refuse up front what deterministic-algorithms mode would stop mid-run.

    With ``torch.use_deterministic_algorithms(True)`` (not ``warn_only``) on CUDA, cuBLAS matrix products raise unless
    ``CUBLAS_WORKSPACE_CONFIG`` is ``:4096:8`` or ``:16:8``; every autoencoder with an attention block, and every UNet,
    uses them. On the CPU every operation decinv runs is deterministic already."""
    if torch.device(device).type != "cuda" or not torch.are_deterministic_algorithms_enabled():
        return
    if torch.is_deterministic_algorithms_warn_only_enabled():
        return
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
        raise RuntimeError("torch.use_deterministic_algorithms(True) is on, and on CUDA the networks' matrix products "
                           "(cuBLAS) are deterministic only with the environment variable CUBLAS_WORKSPACE_CONFIG set "
                           "to :4096:8 (or :16:8); torch would stop in the middle of the run. Set it (export "
                           "CUBLAS_WORKSPACE_CONFIG=:4096:8, before CUDA is first used), or call "
                           "torch.use_deterministic_algorithms(True, warn_only=True).")


def precision(device: torch.device | str, dtype: torch.dtype) -> str:
    """The arithmetic the networks ran in: the dtype, plus the float32 shortcuts torch allows at the moment
    (TF32 convolutions and matrix products on CUDA, reduced float32 matmul precision on either device)."""
    device = torch.device(device)
    text = _name(dtype)
    if dtype != torch.float32:
        return text
    notes = []
    if device.type == "cuda":
        if torch.backends.cudnn.allow_tf32:
            notes.append("TF32 convolutions (torch.backends.cudnn.allow_tf32, torch's default)")
        if torch.backends.cuda.matmul.allow_tf32:
            notes.append("TF32 matrix products (torch.backends.cuda.matmul.allow_tf32)")
    matmul = torch.get_float32_matmul_precision()
    if matmul != "highest" and not (device.type == "cuda" and matmul == "high"):  # "high" on CUDA is the TF32 above
        notes.append(f"float32 matrix products at precision {matmul!r} (torch.set_float32_matmul_precision)")
    return f"{text} with {'; '.join(notes)}" if notes else text


@contextlib.contextmanager
def guarded(device, dtype, *modules, what: str, fix: str):
    """`own_precision` and `evaluating` together, after `check_deterministic`: the guard of every public entry point
    that runs a network (`decinv.invert`, ``LatentModel.encode/decode``, DDIM sampling and inversion, the editing and
    watermark protocols)."""
    check_deterministic(device)
    with own_precision(device, dtype, what, fix), evaluating(*modules, what=what):
        yield
