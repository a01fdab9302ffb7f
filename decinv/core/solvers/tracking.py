"""The bookkeeping every iterative solver shares, kept out of the update rules (the operator T is in
`decinv.core.solvers.operator`): the trace, progress bar, per-sample early stopping, the non-finite guard, the user
callback and the count of iterations run (`decinv.core.work`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from decinv.core import work
from decinv.core.measure import synchronize
from decinv.core.metrics import nmse_db
from decinv.core.progress import progress_bar
from decinv.core.solvers.result import Trace


@dataclass
class StepInfo:
    """Passed to the user's callback after iteration ``k``. ``point`` is where T was evaluated (z_k or y_k),
    ``operator`` is T(point) (None for the gradient-based method), ``z`` the new iterate z_{k+1}."""

    k: int
    z: torch.Tensor
    point: torch.Tensor
    operator: torch.Tensor | None
    residual: torch.Tensor
    lr: float


def norms(t: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norm in float32, shape (N,)."""
    return t.reshape(t.shape[0], -1).float().norm(dim=1)


class Tracker:
    """``work_kind``: the `decinv.core.work` kind each iteration adds, ``batch`` items of it, beyond the operator's own
    count of T's evaluations (gradient-based Adam: ``"grad32"``/``"grad16"``, one D forward + backward per item);
    None: none. ``iterations``: the iterations that ran, the one that found a non-finite value included."""

    def __init__(self, steps: int, batch: int, method: str, device, *, residual_kind: str, z_true=None, tol=None,
                 callback=None, progress: bool = True, work_kind: str | None = None):
        self.steps, self.batch, self.device, self.residual_kind = steps, batch, device, residual_kind
        self.work_kind, self.iterations = work_kind, 0
        self.z_true, self.tol, self.callback = z_true, tol, callback
        self.bar = progress_bar(total=steps, desc=method, enabled=progress, leave=False)
        self.active = None
        self.info: dict = {}
        self.status = "completed"
        self.stopped = False
        self._residual, self._lr, self._nmse, self._seconds = [], [], [], []
        self._start = time.perf_counter()

    def update(self, k: int, z_old: torch.Tensor, z_new: torch.Tensor, residual: torch.Tensor, lr: float,
               point: torch.Tensor | None = None, operator: torch.Tensor | None = None) -> torch.Tensor:
        """Accept (or refuse) iteration k's new iterate and record it; returns the iterate to continue from."""
        self.iterations += 1
        if self.work_kind is not None:
            work.add(self.work_kind, self.batch)
        if self.tol is not None:
            done = residual < self.tol
            self.active = ~done if self.active is None else self.active & ~done
            keep = self.active.view(-1, *([1] * (z_new.dim() - 1)))
            z_new = torch.where(keep, z_new, z_old)
        if not bool(torch.isfinite(z_new).all()):
            self.status = (f"failed: non-finite latent at step {k} (overflow/underflow, e.g. in 16-bit); "
                           f"returning the last finite iterate")
            self.stopped = True
            return z_old
        synchronize(self.device)
        self._seconds.append(time.perf_counter() - self._start)
        self._residual.append(residual.detach())
        self._lr.append(float(lr))
        if self.z_true is not None:
            self._nmse.append(nmse_db(z_new, self.z_true))
        if self.callback is not None:
            self.callback(StepInfo(k, z_new, z_old if point is None else point, operator, residual, float(lr)))
        self.bar.update()
        if self.active is not None and not bool(self.active.any()):
            self.status, self.stopped = f"converged: every sample reached tol={self.tol} by step {k}", True
        return z_new

    def trace(self) -> Trace:
        self.bar.close()
        stack = lambda rows: torch.stack(rows).cpu().numpy() if rows else np.zeros((0, self.batch))
        return Trace(
            residual=stack(self._residual),
            residual_kind=self.residual_kind,
            lr=np.asarray(self._lr),
            seconds=np.asarray(self._seconds),
            nmse_db=stack(self._nmse) if self.z_true is not None else None,
        )
