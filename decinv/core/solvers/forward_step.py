"""The vanilla gradient-free forward step method (FSM), Eq. 8 (Eq. 4 in the introduction)."""

from __future__ import annotations

from decinv.core.solvers.tracking import norms


def forward_step(T, tracker, *, step_size: float = 0.001, beta: float | None = None):
    """z_{k+1} = z_k - rho T(z_k), with T(z) = E(D(z)) - E(x) and z_0 = E(x).

    Theorem 1: if T is beta-cocoercive along the iterates (Eq. 9) and 0 < rho < 2 beta, then T(z_k) -> 0.
    ``step_size`` is rho (the paper's Sec. 3.4 uses 0.001); pass ``beta`` to have ``info['theorem1_condition']``
    say whether rho < 2 beta holds.
    """
    if beta is not None:
        tracker.info.update(beta=beta, theorem1_condition=0 < step_size < 2 * beta)
    z = T.e.clone()
    for k in range(tracker.steps):
        t = T(z)
        z = tracker.update(k, z, z - step_size * t, norms(t), step_size, operator=t)
        if tracker.stopped:
            break
    return z
