"""Deterministic DDIM sampling and naive DDIM inversion for an unconditional LDM.

The watermark application (paper Sec. 5.1, App. A.2.2) needs both directions:
sampling z_T -> z_0 to generate, and inversion z_0 -> z_T to detect. With
eps = eps_theta(z_t, t) and abar_t the cumulative alpha product, one DDIM step
(eta = 0) from timestep t to the earlier timestep s is

    z_s = sqrt(abar_s) * z0_hat + sqrt(1 - abar_s) * eps,
    z0_hat = (z_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t).

Solving the same equation for z_t given z_s is implicit, because eps depends on
z_t. The paper's *naive* DDIM inversion (50 steps for SD2.1; notes Sec. 2.5)
simply evaluates eps_theta(z_s, t) at the latent it already has and runs the
update from s to t, with no fixed-point correction. Its error is therefore
O(|eps(z_t) - eps(z_s)|) per step and vanishes only when eps does not depend on
the latent. diffusers' ``DDIMInverseScheduler`` implements exactly this update on
the reversed timestep grid of ``DDIMScheduler``, so both functions below defer to
diffusers for the arithmetic. The UNet is any module with ``unet(z, t).sample``
predicting what the scheduler's ``prediction_type`` says (eps, v or the sample; e.g.
``diffusers.UNet2DModel``).

Scheduler settings that would make sampling or its inversion silently wrong, or fail inside
diffusers, are refused by `check_scheduler` with an `UnsupportedConfigError` naming the
setting: clipping or dynamic thresholding of the predicted z_0 (latents are not bounded like
pixels), epsilon prediction at zero terminal SNR, a grid the inverse scheduler does not have
("linspace") or one past the training timesteps. The UNet runs in its own dtype and
in eval mode whatever the caller's ``torch.autocast`` or train mode (`decinv.core.ambient`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from decinv.core import ambient, work
from decinv.core.progress import progress_bar
from decinv.core.validation import UnsupportedConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # what DDIMScheduler and DDIMInverseScheduler both implement


def _check_inputs(z: torch.Tensor, steps: int, scheduler: SchedulerMixin, *, inverse: bool = False) -> None:
    """Raise ValueError unless z is a finite, floating 4-D latent and steps is valid; `check_scheduler` after."""
    if not isinstance(z, torch.Tensor) or z.ndim != 4:
        raise ValueError(f"expected a 4-D latent tensor (B, C, h, w), got {getattr(z, 'shape', type(z))}")
    if not z.is_floating_point():
        raise ValueError(f"expected a floating-point latent, got dtype {z.dtype}")
    if not torch.isfinite(z).all():
        raise ValueError("latent contains NaN or Inf")
    n_train = scheduler.config.num_train_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= n_train:
        raise ValueError(f"steps must be an int in [1, {n_train}], got {steps!r}")
    check_scheduler(scheduler, steps, inverse=inverse)


def _grid(config, steps: int) -> list[int]:
    sched = DDIMScheduler.from_config(config)
    sched.set_timesteps(steps)
    return sched.timesteps.tolist()


def check_scheduler(scheduler: SchedulerMixin, steps: int, *, inverse: bool = False) -> None:
    """Refuse a scheduler configuration under which DDIM sampling with ``steps`` steps (``inverse``: or its naive
    inversion) is not the deterministic map this module describes, or fails inside diffusers;
    `UnsupportedConfigError` names the setting and the fix.

    * ``clip_sample=True`` (diffusers' DDIMScheduler default) clamps each step's predicted z_0 to
      ±``clip_sample_range``, and ``thresholding=True`` rescales it by a per-sample percentile: both are meant for
      pixel-space models. Latents are not bounded like pixels, so sampling cuts them, and inversion cannot undo it
      (the inverse scheduler clips too, but a clipped value has lost what it was; it never thresholds).
    * ``rescale_betas_zero_snr=True`` with epsilon prediction divides by ᾱ = 0 at the last training timestep.
    * ``prediction_type`` must be one both schedulers implement (`PREDICTION_TYPES`). Epsilon and sample prediction
      make the naive inversion exact for a denoiser that ignores the latent; with v prediction it is not, because
      the v the UNet returns depends on the noise level its timestep label names, one step away from the latent's:
      for the ideal denoiser of one data point the round trip is off by 36 %, 8 % and 2 % (relative norm) at 10,
      50 and 200 steps (tests/test_configs.py). Supported, with that extra O(1/steps) error.
    * The grid: ``timestep_spacing="linspace"`` has no inverse grid in diffusers (refused for inversion; sampling
      is fine), and a grid whose largest timestep is beyond the training range (``steps_offset=1`` with
      ``steps = num_train_timesteps``) would index past the schedule. Other grids are supported: "leading" and
      "trailing" spacing, any ``steps_offset``, ``set_alpha_to_one``, every beta schedule."""
    config = scheduler.config
    name = type(scheduler).__name__
    if config.get("clip_sample", False):
        raise UnsupportedConfigError(
            f"{name} has clip_sample=True: every DDIM step clamps its predicted z_0 to "
            f"±{config.get('clip_sample_range', 1.0)}, which cuts latents (they are not bounded like pixels) and "
            "cannot be undone by inversion. Build the scheduler with clip_sample=False (DDIMScheduler's default is "
            "True; the configs of latent diffusion pipelines set it False).")
    if config.get("thresholding", False):
        raise UnsupportedConfigError(
            f"{name} has thresholding=True: dynamic thresholding rescales each predicted z_0 by a per-sample "
            "percentile, which is meant for pixel-space models and which DDIM inversion does not undo. Use "
            "thresholding=False.")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise UnsupportedConfigError(f"{name} has prediction_type={prediction!r}; DDIM sampling and inversion "
                                     f"support {', '.join(PREDICTION_TYPES)}.")
    if config.get("rescale_betas_zero_snr", False) and prediction == "epsilon":
        raise UnsupportedConfigError(
            f"{name} has rescale_betas_zero_snr=True with prediction_type='epsilon': at zero terminal SNR "
            "(alpha_bar = 0) the predicted z_0 divides by zero. Zero-SNR schedules need "
            "prediction_type='v_prediction' (and a UNet trained for it), or use rescale_betas_zero_snr=False.")
    spacing = config.get("timestep_spacing", "leading")
    if inverse and spacing not in ("leading", "trailing"):
        raise UnsupportedConfigError(
            f"{name} has timestep_spacing={spacing!r}, for which diffusers' DDIMInverseScheduler has no grid; use "
            "timestep_spacing='leading' (or 'trailing') for sampling and inversion alike.")
    n_train = config.num_train_timesteps
    if spacing in ("leading", "trailing") and max(_grid(config, steps)) >= n_train:
        fits = next(k for k in range(steps - 1, 0, -1) if max(_grid(config, k)) < n_train)
        raise UnsupportedConfigError(
            f"{name} with steps_offset={config.get('steps_offset', 0)} puts the {steps}-step grid's first timestep "
            f"at {max(_grid(config, steps))}, past its {n_train} training timesteps; use at most {fits} steps (or "
            "steps_offset=0).")


def _guard(unet, z: torch.Tensor, what: str):
    """`decinv.core.ambient.guarded` for a UNet call: its own dtype (not the caller's autocast), eval mode, frozen."""
    module = unet if isinstance(unet, torch.nn.Module) else None
    param = next(module.parameters(), None) if module is not None else None
    dtype = param.dtype if param is not None else z.dtype
    return ambient.guarded(z.device, dtype, module, what=what, fix="cast the UNet (and the latents) to it, e.g. "
                           "unet.to(torch.{dtype})")


@dataclass
class Trajectory:
    """The S + 1 latents a DDIM sampler visits: ``latents[0]`` = z_T, ``latents[S]`` = z_0, shape (S+1, B, C, h, w).

    ``timesteps`` (S,) are the sampler's timesteps: step i goes from ``latents[i]`` to ``latents[i+1]`` and
    evaluates the UNet at ``timesteps[i]``. ``how`` says where the latents came from.
    """

    latents: torch.Tensor
    timesteps: torch.Tensor
    how: str = ""

    @property
    def z_T(self) -> torch.Tensor:
        return self.latents[0]

    @property
    def z_0(self) -> torch.Tensor:
        return self.latents[-1]

    @property
    def steps(self) -> int:
        return len(self.timesteps)


@torch.no_grad()
def ddim_sample(unet: torch.nn.Module, scheduler: SchedulerMixin, z_T: torch.Tensor,
                steps: int = 50, *, progress: bool = False, return_trajectory: bool = False,
                after_step=None, what: str = "ddim_sample") -> torch.Tensor | Trajectory:
    """Run deterministic DDIM (eta = 0) from initial noise z_T to z_0.

    A fresh ``DDIMScheduler`` is built from ``scheduler.config``, so the caller's
    scheduler is left untouched. Returns z_0, a tensor with z_T's shape, dtype and device;
    ``return_trajectory=True`` returns the `Trajectory` of all S + 1 latents instead (its
    ``z_0`` is the same tensor bit for bit).

    ``after_step(i, z)``: called after step i (0-based) with the new latent z_{i+1}; what it returns
    replaces z_{i+1} (`decinv.applications.editing.blended_edit` pastes the background back there). ``what``: the name
    an ambient-state warning gives the call (`decinv.core.ambient`), e.g. the caller's.
    """
    _check_inputs(z_T, steps, scheduler)
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps, device=z_T.device)
    z, out = z_T, [z_T]
    with _guard(unet, z_T, what):
        for i, t in enumerate(progress_bar(sched.timesteps, desc="DDIM sample", enabled=progress)):
            eps = unet(z, t).sample
            z = sched.step(eps, t, z, eta=0.0).prev_sample
            if after_step is not None:
                z = after_step(i, z)
            if return_trajectory:
                out.append(z)
    if return_trajectory:
        return Trajectory(torch.stack(out), sched.timesteps.clone(), f"DDIM-{steps} sampling")
    return z


@torch.no_grad()
def ddim_invert(unet: torch.nn.Module, scheduler: SchedulerMixin, z0: torch.Tensor,
                steps: int = 50, *, progress: bool = False, return_trajectory: bool = False,
                what: str = "ddim_invert") -> torch.Tensor | Trajectory:
    """Naive DDIM inversion z_0 -> z_T, the approximate inverse of ``ddim_sample``.

    Visits the timesteps of ``ddim_sample(..., steps)`` in reverse; at each one
    the step s -> t uses eps_theta(z_s, t) (current latent, target timestep
    label), which is what the paper's code does for SD2.1. Exact when eps does
    not depend on the latent; otherwise the error grows with the UNet's
    sensitivity and shrinks as ``steps`` grows. With ``prediction_type="v_prediction"``
    it is not exact even then (see `check_scheduler`): an extra O(1/steps) error.

    ``return_trajectory=True`` returns every latent as a `Trajectory` in *sampling*
    order (the inverse scheduler visits the sampling grid backwards, so the list is
    reversed): its ``z_0`` is the input itself and its ``z_T`` the returned z_T. ``what``: as for `ddim_sample`.
    Each latent of z0 counts as one ``diffusion_inversion`` (`decinv.core.work`).
    """
    _check_inputs(z0, steps, scheduler, inverse=True)
    work.add(work.DIFFUSION_INVERSION, len(z0))
    sched = DDIMInverseScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps, device=z0.device)
    z, out = z0, [z0]
    with _guard(unet, z0, what):
        for t in progress_bar(sched.timesteps, desc="DDIM invert", enabled=progress):
            eps = unet(z, t).sample
            z = sched.step(eps, t, z).prev_sample
            if return_trajectory:
                out.append(z)
    if return_trajectory:
        return Trajectory(torch.stack(out[::-1]), sched.timesteps.flip(0), f"naive DDIM-{steps} inversion")
    return z
