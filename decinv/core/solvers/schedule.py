"""Learning-rate schedules as multiplicative factors for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math


def paper_schedule(steps: int, cap: int | None = 100):
    """The paper's schedule for gradient-free Adam (Sec. 4, "(Optional) Learning rate scheduling").

    With horizon N = min(steps, cap): linear warm-up over the first W = N // 10 steps, factor (i+1)/W; then cosine
    annealing (1 + cos(pi (i - W) / (N - W))) / 2; from i = 0.8 N on, the factor stays at its last value.
    The official code caps N at 100 for every run (so a 200-step run is constant from step 80 on); ``cap=None``
    uses the full run as horizon. Factor for steps=100: 0.12843 from step 80 on (lr_max 0.01 -> 0.0012843).
    A run of 0 steps (``torch.optim.lr_scheduler.LambdaLR`` still asks for step 0's factor) gets factor 1.
    """
    horizon = min(steps, cap) if cap else steps
    warmup = horizon // 10

    def factor(i: int) -> float:
        i = max(0, min(i, math.ceil(0.8 * horizon) - 1))  # constant tail: hold the value of the last annealed step
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, horizon - warmup)))

    return factor


def warmup_cosine_schedule(steps: int):
    """The gradient-based baseline's schedule ([14], ``get_cosine_schedule_with_warmup``): factor i / W during
    the W = steps // 10 warm-up steps (so step 0 has lr 0), then cosine from 1 to 0 at ``steps``."""
    warmup = steps // 10

    def factor(i: int) -> float:
        if i < warmup:
            return i / warmup
        return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

    return factor
