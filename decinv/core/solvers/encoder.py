"""The encoder baseline: z = E(x), no iterations (also the starting point of every other method)."""

from __future__ import annotations


def encoder(T, tracker):
    """Return E(x) as is: a right-inverse of D (D(E(x)) ~ x) but not a left-inverse (E(D(z)) != z)."""
    return T.e.clone()
