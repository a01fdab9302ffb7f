"""Progress bars that suit where their output goes.

Every long loop in decinv (solver iterations, DDIM steps, dataset jobs, benchmark suites) shows a tqdm bar. In a
terminal or a Jupyter kernel tqdm redraws the bar in place; written to a file (a cluster job's log, ``decinv invert
... 2> log``, CI) each redraw becomes a new line of carriage-return junk, ten per second. `progress_bar` keeps tqdm's
defaults where the bar is redrawn in place and, where it is not, refreshes it at most every `LOG_INTERVAL` seconds,
so a log gets a line per half-minute with the count, rate and ETA. tqdm's own environment variables still apply
(``TQDM_DISABLE=1`` hides every bar, ``TQDM_MININTERVAL=5`` sets the interval): tqdm reads them as defaults, which
an explicit ``disable=False`` would override, so a shown bar passes no ``disable`` at all.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between refreshes of a bar written to a file or pipe


def redrawn_in_place(stream=None) -> bool:
    """Whether a bar written to ``stream`` (default ``sys.stderr``, tqdm's) is redrawn in place: a terminal, or a
    Jupyter kernel (its output area interprets carriage returns)."""
    stream = sys.stderr if stream is None else stream
    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable=None, *, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``), hidden when ``enabled`` is False.

    ``options`` go to tqdm (``desc``, ``total``, ``unit``, ``leave``...). Where the output is not redrawn in place
    (`redrawn_in_place` is False) and neither the caller nor ``TQDM_MININTERVAL`` sets ``mininterval``, the bar
    refreshes every `LOG_INTERVAL` seconds instead of tqdm's 0.1 s."""
    if not enabled:
        options["disable"] = True
    elif "mininterval" not in options and "TQDM_MININTERVAL" not in os.environ \
            and not redrawn_in_place(options.get("file")):
        options["mininterval"] = LOG_INTERVAL
    return tqdm(iterable, **options)
