"""Benchmarks behind ``bench/*.py`` and ``interestlake bench NAME``; each returns a JSON-able dict.

They never run in the pass/fail test suite (a smoke test runs each at a tiny
size): they take minutes and measure this machine. Speeds are reported as
ratios against a reference measured in the same run.
"""

from interestlake.benchmarks.encode import encode_benchmark
from interestlake.benchmarks.freshness import freshness_benchmark
from interestlake.benchmarks.refresh import refresh_benchmark
from interestlake.benchmarks.score import score_benchmark

__all__ = ["encode_benchmark", "freshness_benchmark", "refresh_benchmark", "score_benchmark"]
