"""The paper's practical method (Sec. 4): Adam driven by T(z) = E(D(z)) - E(x) instead of a gradient."""

from __future__ import annotations

import torch

from decinv.core.solvers.schedule import paper_schedule
from decinv.core.solvers.tracking import norms

EPS = {torch.float32: 1e-8, torch.float16: 1e-4, torch.bfloat16: 1e-4}  # the official code's 32/16-bit values


def gradfree_adam(T, tracker, *, lr: float = 0.01, schedule: str | None = "paper", schedule_cap: int | None = 100,
                  betas: tuple[float, float] = (0.9, 0.999), eps: float | None = None,
                  master_dtype: torch.dtype | None = torch.float32):
    """``torch.optim.Adam`` on z with "gradient" T(z_k); no backpropagation anywhere (forward passes only).

    ``schedule="paper"``: warm-up for the first 1/10, cosine annealing, constant after 8/10 of the horizon
    min(steps, ``schedule_cap``) (see `paper_schedule`); ``schedule=None`` keeps ``lr`` fixed. ``eps`` defaults to
    1e-8 in fp32 and 1e-4 when the networks or Adam's state are 16-bit, as in the official code (1e-8 is 0 in fp16,
    and a component whose g^2 underflows then divides by 0); an ``eps`` > 0 that is 0 in the state's dtype is refused.
    ``master_dtype``: precision of z and of Adam's moments (the networks always run in the model's dtype).
    float32 by default: in an fp16 state (1 - beta2) g^2 underflows for |g| < 7.7e-3, the denominator falls to
    eps and steps become far too large (measured on the tiny model: fp16 state -18.9 -> -13.5 dB in 10 steps,
    fp32 state -20.75 dB like fp32). ``None`` keeps everything in the model's dtype, as the official code does.
    """
    if schedule not in ("paper", None):
        raise ValueError(f"schedule must be 'paper' or None, got {schedule!r}")
    net_dtype = T.e.dtype
    state_dtype = master_dtype or net_dtype
    if eps is None:
        eps = max(EPS.get(net_dtype, 1e-8), EPS.get(state_dtype, 1e-8))
    elif eps > 0 and float(torch.tensor(eps, dtype=state_dtype)) == 0:
        raise ValueError(f"gradfree-adam option eps={eps} is 0 in {state_dtype} (Adam's state, master_dtype); use "
                         f"eps=1e-4 (the official 16-bit value), eps=None or master_dtype=torch.float32.")
    z = T.e.to(state_dtype, copy=True)
    optimizer = torch.optim.Adam([z], lr=lr, betas=betas, eps=eps)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, paper_schedule(tracker.steps, schedule_cap))
                 if schedule else None)
    for k in range(tracker.steps):
        t = T(z.to(net_dtype))
        step_lr, z_old = optimizer.param_groups[0]["lr"], z.clone()
        z.grad = t.to(z.dtype)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        z_next = tracker.update(k, z_old, z, norms(t), step_lr, point=z_old, operator=t)
        if z_next is not z:
            z.copy_(z_next)
        if tracker.stopped:
            break
    z.grad = None
    return z.to(net_dtype)
