"""The inertial Krasnoselskii-Mann iteration, Eqs. 10-11 (Theorem 2)."""

from __future__ import annotations

from decinv.core.solvers.tracking import norms


def km_condition(alpha: float, lam: float) -> bool:
    """Theorem 2's step condition (13): lambda (1 - alpha + 2 alpha^2) < (1 - alpha)^2, with 0 < alpha < 1."""
    return 0 < alpha < 1 and lam > 0 and lam * (1 - alpha + 2 * alpha**2) < (1 - alpha) ** 2


def inertial_km(T, tracker, *, alpha: float = 0.9, step_size: float = 0.001, beta: float | None = None):
    """y_k = z_k + alpha (z_k - z_{k-1})  (10);   z_{k+1} = y_k - 2 lambda beta T(y_k)  (11).

    ``step_size`` is the effective step rho = 2 lambda beta (Sec. 3.4: 0.001 with alpha = 0.9); z_{-1} = z_0 = E(x)
    (the paper leaves z_{-1} unstated). With ``beta`` given, ``info`` reports lambda = rho / (2 beta) and whether
    condition (13) holds: for alpha = 0.9 it needs lambda < 0.0058, i.e. rho < 0.0116 beta.
    """
    if beta is not None:
        lam = step_size / (2 * beta)
        tracker.info.update(beta=beta, lam=lam, condition_13=km_condition(alpha, lam))
    z_prev = z = T.e.clone()
    for k in range(tracker.steps):
        y = z + alpha * (z - z_prev)
        t = T(y)
        z_prev, z = z, tracker.update(k, z, y - step_size * t, norms(t), step_size, point=y, operator=t)
        if tracker.stopped:
            break
    return z
