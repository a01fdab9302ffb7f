"""The gradient-based baseline of Hong et al. [14] (paper Eq. 2-3): Adam on ||D(z) - x||^2 through autograd."""

from __future__ import annotations

import torch

from decinv.core import ambient
from decinv.core.solvers.schedule import warmup_cosine_schedule


def gradient_adam(T, tracker, *, lr: float = 0.1, schedule: str | None = "warmup-cosine"):
    """min_z ||D(z) - x||^2 (sum over pixels, MSELoss(reduction='sum')) with ``torch.optim.Adam`` defaults.

    ``schedule="warmup-cosine"``: [14]'s linear warm-up over 1/10 of the steps then cosine to 0 ("0.1 scheduled");
    ``None``: fixed lr ("0.01 fixed" with lr=0.01). The VAE's weights are frozen, so backward computes dL/dz only.
    With ``chunk_size`` the loss, separable over images/frames, is backpropagated one chunk at a time
    (memory of one chunk's graph; same gradient). Everything runs in the model's dtype: in fp16 the Adam state
    underflows and the run fails (the paper's "unimplementable"), which is detected and reported in ``status``
    (also under the caller's ``torch.autograd.set_detect_anomaly(True)``, which is off for this backward pass).
    """
    if schedule not in ("warmup-cosine", None):
        raise ValueError(f"schedule must be 'warmup-cosine' or None, got {schedule!r}")
    model, x = T.model, T.x
    z = T.e.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_schedule(tracker.steps))
                 if schedule else None)
    z_view = z.detach()  # shares storage with z: sees every in-place optimizer step
    size = T.chunk_size or len(z)
    for k in range(tracker.steps):
        optimizer.zero_grad(set_to_none=True)
        squared = []
        with ambient.autograd():  # even inside the caller's no_grad/inference_mode; anomaly mode off (see there)
            for start in range(0, len(z), size):
                diff = model.decode(z[start : start + size], grad=True, check=False) - x[start : start + size]
                per_sample = diff.pow(2).reshape(len(diff), -1).sum(1)
                per_sample.sum().backward()
                squared.append(per_sample.detach())
        step_lr, z_old = optimizer.param_groups[0]["lr"], z_view.clone()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        z_next = tracker.update(k, z_old, z_view, torch.cat(squared).float().sqrt(), step_lr)
        if z_next is not z_view:
            z_view.copy_(z_next)
        if tracker.stopped:
            break
    return z_view
