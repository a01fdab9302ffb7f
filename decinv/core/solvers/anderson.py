"""Anderson acceleration of the forward step (beyond the paper): type-II Anderson mixing, per sample, safeguarded."""

from __future__ import annotations

import torch

from decinv.core.solvers.tracking import norms


def anderson(T, tracker, *, memory: int = 5, step_size: float = 0.5, reg: float = 1e-8,
             safeguard: bool = True):
    """Type-II Anderson acceleration (Walker & Ni 2011, Eqs. 2.1-2.2) of the fixed-point map G(z) = z - rho T(z),
    with T(z) = E(D(z)) - E(x) and z_0 = E(x); one E+D call per iteration, like every gradient-free method.

    With f_j = G(z_j) - z_j = -rho T(z_j) and the last m_k <= ``memory`` differences of accepted iterates,
    dF = [f_{j+1} - f_j], dG = [G(z_{j+1}) - G(z_j)] (each a (d, m_k) matrix per sample, d = latent size):

        gamma_k = argmin_gamma ||f_k - dF gamma||^2 + lam ||gamma||^2,   lam = ``reg`` * tr(dF^T dF) / m_k
        z_{k+1} = G(z_k) - dG gamma_k

    In the differences of the iterates and of T that the code keeps (and chapter 7 writes), dZ = [z_{j+1} - z_j]
    and dT = [T(z_{j+1}) - T(z_j)], so dF = -rho dT and dG = dZ - rho dT; rho cancels in gamma and the step reads

        gamma_k = argmin_gamma ||T(z_k) - dT gamma||^2 + lam ||gamma||^2,   lam = ``reg`` * tr(dT^T dT) / m_k
        z_{k+1} = (z_k - dZ gamma_k) - rho (T(z_k) - dT gamma_k)            (`_propose`)

    With m_k = 0 this is the plain forward step (Eq. 8). Each image or frame solves its own small least-squares
    problem (batched, in float64): samples never mix. For a linear T(z) = A (z - z*) and unlimited memory the
    iterates are those of GMRES on A z = A z* up to one extra step of G, so an n-dimensional problem is solved
    (to round-off) within n + 1 iterations.

    What theory gives here: local convergence when G is a contraction near the fixed point (Toth & Kelley 2015,
    r-linear at a rate no worse than G's); nothing global for a T that is merely beta-cocoercive, which is all the
    paper assumes (its Theorems 1-2 cover the forward step and inertial KM, not Anderson). Hence the safeguard.

    ``safeguard`` (default on): an evaluated candidate is accepted only if ||T|| there is not larger than at the last
    accepted iterate. A rejected candidate costs its E+D call; that sample's history is cleared and it takes the
    plain step from its last accepted iterate; if that plain step is also rejected, its rho is halved. So the
    accepted residuals never increase, and a non-finite candidate is simply rejected. Off, every candidate is taken
    (pure Anderson). Each new candidate is built from accepted iterates only.

    As for the other methods, after k iterations (k E+D calls) the result is the next candidate z_k, not yet
    evaluated; the trace's ``residual`` is ||T|| at each evaluated candidate (rejected ones included).

    ``memory`` is m (m = 0 gives the forward step). ``step_size`` is rho; unlike the forward step's 0.001
    (Sec. 3.4), the default 0.5 is ours, chosen on the bundled model, where the forward step with rho = 0.5 is
    stable; the safeguard halves it per sample where it is not. ``reg`` is the relative Tikhonov weight.

    Memory: per sample 2 m history vectors plus 4 working vectors (z, f, G(z), candidate) of the latent's size,
    in float32 (float64 for a float64 model) whatever the networks' dtype, so fp16 models keep an fp32 state:
    ``info['state_bytes']`` gives the total for the batch.
    """
    if not isinstance(memory, int) or memory < 0:
        raise ValueError(f"memory must be a non-negative integer (m = 0 is the forward step), got {memory!r}.")
    if not step_size > 0:
        raise ValueError(f"step_size (rho) must be positive, got {step_size!r}.")
    net_dtype, shape = T.e.dtype, T.e.shape
    dtype = torch.promote_types(net_dtype, torch.float32)
    n, d, device = shape[0], T.e[0].numel(), T.e.device
    rho = torch.full((n, 1), float(step_size), dtype=dtype, device=device)
    # History of accepted steps, newest first: dZ_j = z_{j+1} - z_j and dT_j = T(z_{j+1}) - T(z_j); then
    # dF = -rho dT and dG = dZ - rho dT, so rho drops out of gamma (see `_propose`).
    dZ = torch.zeros(n, memory, d, dtype=dtype, device=device)
    dT = torch.zeros_like(dZ)
    count = torch.zeros(n, dtype=torch.long, device=device)
    rejected = torch.zeros(n, dtype=torch.long, device=device)
    tracker.info.update(memory=memory, state_bytes=(2 * memory + 4) * d * n * dtype.itemsize,
                        state_dtype=str(dtype).replace("torch.", ""))

    z = T.e.reshape(n, d).to(dtype)  # the last accepted iterate, with t = T(z) and r = ||t||
    candidate, t, r = z.clone(), None, None
    plain = torch.ones(n, dtype=torch.bool, device=device)
    for k in range(tracker.steps):
        t_new = T(candidate.to(net_dtype).reshape(shape)).reshape(n, d).to(dtype)
        r_new = norms(t_new)
        if t is None or not safeguard:
            accept = torch.ones(n, dtype=torch.bool, device=device)
        else:
            accept = r_new <= r  # False for NaN
        if t is not None and memory > 0:
            push = accept[:, None, None]
            dZ = torch.where(push, torch.cat([(candidate - z)[:, None], dZ[:, :-1]], 1), dZ)
            dT = torch.where(push, torch.cat([(t_new - t)[:, None], dT[:, :-1]], 1), dT)
            count = torch.where(accept, (count + 1).clamp(max=memory), 0)  # a rejection clears the history
        rejected += (~accept).long()
        rho = torch.where((~accept & plain)[:, None], rho / 2, rho)  # even the plain step failed: halve rho
        keep = accept[:, None]
        z = torch.where(keep, candidate, z)
        t, r = (t_new, r_new) if t is None else (torch.where(keep, t_new, t), torch.where(accept, r_new, r))
        proposal, plain = _propose(z, t, rho, dZ, dT, count, reg)
        finite = torch.isfinite(proposal).all(1)
        proposal = torch.where(finite[:, None], proposal, z - rho * t)  # a singular solve falls back to the plain step
        plain = plain | ~finite
        candidate = tracker.update(k, candidate.reshape(shape), proposal.reshape(shape), r_new, float(rho.mean()),
                                   operator=t_new.to(net_dtype).reshape(shape)).reshape(n, d).to(dtype)
        if tracker.stopped:
            break
    tracker.info.update(rejected_steps=rejected.tolist(), final_step_size=rho[:, 0].tolist())
    return candidate.to(net_dtype).reshape(shape)


def _propose(z, t, rho, dZ, dT, count, reg):
    """Next candidate per sample, (N, d) each: with gamma = argmin ||t - dT gamma||^2 + lam ||gamma||^2 (float64;
    the same gamma as for f = -rho t and dF = -rho dT),

        G(z) - dG gamma = (z - dZ gamma) - rho (t - dT gamma),

    or the plain step z - rho t where a sample has no history. Returns (candidate, plain mask)."""
    plain = count == 0
    if dZ.shape[1] == 0 or bool(plain.all()):
        return z - rho * t, plain
    m = dZ.shape[1]
    valid = (torch.arange(m, device=z.device)[None] < count[:, None]).double()  # (N, m)
    T64 = dT.double() * valid[..., None]
    gram = T64 @ T64.transpose(1, 2)  # (N, m, m)
    lam = reg * gram.diagonal(dim1=1, dim2=2).sum(1) / count.clamp(min=1) + 1e-300
    gram = gram + torch.diag_embed(lam[:, None] * valid + (1 - valid))  # inactive columns get gamma_j = 0
    gamma = (torch.linalg.solve(gram, T64 @ t.double()[..., None])[..., 0] * valid).to(z.dtype)[:, None]  # (N,1,m)
    return (z - (gamma @ dZ)[:, 0]) - rho * (t - (gamma @ dT)[:, 0]), plain
