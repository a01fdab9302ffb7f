"""The trade-off suite's old import path: the suite is `decinv.bench.tradeoff` now.

Kept while notebooks/benchmark.md imports ``from decinv import bench_tradeoff``; new code imports
`decinv.bench.tradeoff`."""

from decinv.bench.tradeoff import reanalyse, summarize_tradeoff, time_to_reach, tradeoff

__all__ = ["reanalyse", "summarize_tradeoff", "time_to_reach", "tradeoff"]
