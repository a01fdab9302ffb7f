"""The acceleration suite's old import path: the suite is `decinv.bench.acceleration` now.

Kept while notebooks/08_anderson.md imports ``from decinv.bench_acceleration import ...``; new code imports
`decinv.bench.acceleration`."""

from decinv.bench.acceleration import acceleration, acceleration_frame, calls_to, curves, methods, summarize_acceleration

__all__ = ["acceleration", "acceleration_frame", "calls_to", "curves", "methods", "summarize_acceleration"]
