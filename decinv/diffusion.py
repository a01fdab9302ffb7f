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
predicting eps (e.g. ``diffusers.UNet2DModel``).
"""

from __future__ import annotations

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm import tqdm


def _check_inputs(z: torch.Tensor, steps: int, scheduler: SchedulerMixin) -> None:
    """Raise ValueError unless z is a finite, floating 4-D latent and steps is valid."""
    if not isinstance(z, torch.Tensor) or z.ndim != 4:
        raise ValueError(f"expected a 4-D latent tensor (B, C, h, w), got {getattr(z, 'shape', type(z))}")
    if not z.is_floating_point():
        raise ValueError(f"expected a floating-point latent, got dtype {z.dtype}")
    if not torch.isfinite(z).all():
        raise ValueError("latent contains NaN or Inf")
    n_train = scheduler.config.num_train_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= n_train:
        raise ValueError(f"steps must be an int in [1, {n_train}], got {steps!r}")


@torch.no_grad()
def ddim_sample(unet: torch.nn.Module, scheduler: SchedulerMixin, z_T: torch.Tensor,
                steps: int = 50, *, progress: bool = False) -> torch.Tensor:
    """Run deterministic DDIM (eta = 0) from initial noise z_T to z_0.

    A fresh ``DDIMScheduler`` is built from ``scheduler.config``, so the caller's
    scheduler is left untouched. Returns a tensor with z_T's shape, dtype and device.
    """
    _check_inputs(z_T, steps, scheduler)
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps, device=z_T.device)
    z = z_T
    for t in tqdm(sched.timesteps, desc="DDIM sample", disable=not progress):
        eps = unet(z, t).sample
        z = sched.step(eps, t, z, eta=0.0).prev_sample
    return z


@torch.no_grad()
def ddim_invert(unet: torch.nn.Module, scheduler: SchedulerMixin, z0: torch.Tensor,
                steps: int = 50, *, progress: bool = False) -> torch.Tensor:
    """Naive DDIM inversion z_0 -> z_T, the approximate inverse of ``ddim_sample``.

    Visits the timesteps of ``ddim_sample(..., steps)`` in reverse; at each one
    the step s -> t uses eps_theta(z_s, t) (current latent, target timestep
    label), which is what the paper's code does for SD2.1. Exact when eps does
    not depend on the latent; otherwise the error grows with the UNet's
    sensitivity and shrinks as ``steps`` grows.
    """
    _check_inputs(z0, steps, scheduler)
    sched = DDIMInverseScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps, device=z0.device)
    z = z0
    for t in tqdm(sched.timesteps, desc="DDIM invert", disable=not progress):
        eps = unet(z, t).sample
        z = sched.step(eps, t, z).prev_sample
    return z
