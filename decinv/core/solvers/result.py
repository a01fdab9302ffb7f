"""What an inversion returns: the latent, a per-step trace, and how long / how much memory it took."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Trace:
    """One row per iteration k (arrays of shape (K,) or (K, B) with B the number of images or frames).

    ``residual``: the per-sample norm the method drives to zero, of the kind named by ``residual_kind``:
    ||T(p_k)|| = ||E(D(p_k)) - E(x)|| at the evaluation point p_k (z_k, or y_k for inertial KM) for the
    gradient-free methods, and ||D(z_k) - x|| for the gradient-based one (its loss; T is never computed there).
    ``lr``: the step size used at k. ``nmse_db``: 10 log10 ||z_{k+1} - z*||^2/||z*||^2 when ``z_true`` was given.
    ``seconds``: wall time from the start of the call to the end of iteration k (synchronised on CUDA).
    """

    residual: np.ndarray
    residual_kind: str
    lr: np.ndarray
    seconds: np.ndarray
    nmse_db: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lr)


@dataclass
class InversionResult:
    """Result of `decinv.invert`.

    ``seconds``: wall time of the whole call after input checks, including the initial E(x) (synchronised on CUDA).
    ``peak_memory_bytes``: see `decinv.core.measure` (CUDA: absolute max_memory_allocated; CPU: extra peak RSS).
    ``status``: "completed" (all steps ran), "converged" (every sample reached ``tol``), or "failed: ..."
    (a non-finite value appeared, e.g. fp16 underflow; ``z`` is then the last finite iterate).
    ``info``: method-specific facts, e.g. whether a step satisfies Theorem 1's or Theorem 2's condition.
    ``dtype``: the dtype the networks ran in (the model's; a caller's ``torch.autocast`` does not change it) and of
    ``z``; ``precision``: the same with the float32 shortcuts torch allowed during the run, e.g. "float32 with TF32
    convolutions (...)" on CUDA (`decinv.core.ambient.precision`).
    """

    z: torch.Tensor
    trace: Trace
    method: str
    dtype: torch.dtype
    status: str
    seconds: float
    peak_memory_bytes: int | None
    memory_kind: str
    info: dict = field(default_factory=dict)
    precision: str = ""

    @property
    def failed(self) -> bool:
        return self.status.startswith("failed")

    @property
    def steps_run(self) -> int:
        return len(self.trace)

    def __repr__(self) -> str:
        mem = f"{self.peak_memory_bytes / 2**20:.1f} MiB" if self.peak_memory_bytes is not None else "n/a"
        last = f", final NMSE {np.mean(self.trace.nmse_db[-1]):.2f} dB" if self.trace.nmse_db is not None and len(self.trace) else ""
        return (f"InversionResult({self.method}, {self.steps_run} steps, {self.status}, {self.seconds:.3f} s, "
                f"peak memory {mem}, dtype {self.precision or self.dtype}{last})")
