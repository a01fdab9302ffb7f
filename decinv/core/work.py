"""How much inversion work a block of code does: counted where the work happens, not timed.

    >>> with count_work() as work:
    ...     decinv.invert(x, model, "gradfree-adam", 100)          # x: 4 images, float32 model
    >>> dict(work.done)
    {'free32': 400}

``work.done`` maps a kind of work to its count, in units of **items × iterations**, for everything that ran in the
block (in any thread of the process). The kinds are the cost classes of the book's GPU estimates
(``scripts/book_chapters.py``):

* ``free32``, ``free16``: one E(D(z)) of one item with the networks in 32 or 16 bits (float16 and bfloat16 are
  16; a float64 model gives ``free64``). Counted by `decinv.core.solvers.Operator.ed`, so every evaluation of T
  or E∘D counts: each iteration of the forward step, inertial KM, gradient-free Adam and Anderson inside
  `decinv.invert` (Anderson's rejected candidates too: each costs its E(D)), and each ``T(z)`` or ``T.ed(z)`` a
  caller evaluates on a `decinv.operator` (e.g. a chapter's cocoercivity ratios).
* ``grad32``, ``grad16``: one D forward + backward of one item (gradient-based Adam, one per iteration).
* ``diffusion_inversion``: one diffusion inversion z_0 → ẑ_T of one latent, whatever its number of steps: the
  bundled LDMs' naive DDIM inversion (`decinv.generation.diffusion.ddim_invert`) and the real pipelines' (SD 2.1's
  guided DDIM, InstaFlow's backward Euler), counted in `decinv.applications.watermark_pipelines.invert_diffusion`.

An **item** is what the autoencoder maps as one: an image; a frame, for a frame-wise (2-D) autoencoder, which
inverts a video's frames as a batch of images (the video profiles; `decinv.generation.instances.Instances.frames`);
a whole video for a temporal (3-D) autoencoder (``model.temporal``), which `decinv.invert` inverts video by video.
So 4 images × 100 iterations of gradient-free Adam in float32 count ``free32 = 400``, and one 16-frame clip of
SD 1.4's frame-wise autoencoder × 10 iterations counts 160.

Not counted: the first encoding E(x) of a run or of an operator, decoding for pictures or pixel errors, generating
instances, the encoder baseline (no iterations), and a program's direct calls of a model's ``encode``/``decode``
(e.g. a micro-benchmark of them): those are not solver, operator or diffusion-inversion work.

``work.skipped``: items × iterations that a `decinv.invert` call was asked for (``steps``) but did not run because
it stopped early (a non-finite iterate, or every sample reached ``tol``). The iteration that found the non-finite
value ran, so it is in ``done``. ``work.asked()`` = done + skipped is what a run's parameters alone determine.

Counting is an integer addition per solver iteration, operator call or diffusion inversion, and changes no result.
Counters nest: every open one sees all the work done while it is open.
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

DIFFUSION_INVERSION = "diffusion_inversion"


@dataclass(eq=False)  # identity, not contents: two open counters with equal counts are still two counters
class WorkCount:
    """What a `count_work` block counted: ``done`` and ``skipped``, {kind: items × iterations} (0 for a kind never
    seen)."""

    done: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def asked(self) -> Counter:
        """done + skipped: the work the calls were asked for, as if no run had stopped early."""
        out = Counter(self.done)
        out.update(self.skipped)
        return out


_OPEN: list[WorkCount] = []


@contextmanager
def count_work():
    """``with count_work() as work: ...``: count the work done inside the block (see the module's docstring)."""
    work = WorkCount()
    _OPEN.append(work)
    try:
        yield work
    finally:
        _OPEN.remove(work)


def add(kind: str, items: int, *, skipped: bool = False) -> None:
    """Add ``items`` of ``kind`` to every open counter (``skipped``: to its ``skipped`` tally). Nothing when none is
    open or ``items`` is 0."""
    if items:
        for work in _OPEN:
            (work.skipped if skipped else work.done)[kind] += int(items)


def kind(gradient: bool, dtype: torch.dtype) -> str:
    """The kind of one solver iteration: ``"grad"`` (D forward + backward) or ``"free"`` (E(D(z))), then the bits
    of the networks' ``dtype``: ``"free32"``, ``"grad16"``, ..."""
    return f"{'grad' if gradient else 'free'}{torch.finfo(dtype).bits}"


def items(z: torch.Tensor, temporal: bool = False) -> int:
    """How many items a batch of latents holds: the product of its leading dimensions, before (C, h, w), or before
    (frames, C, h, w) for a ``temporal`` autoencoder's latent videos."""
    return math.prod(z.shape[: max(z.dim() - (4 if temporal else 3), 0)])
