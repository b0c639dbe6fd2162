"""Seconds from a landing file to its recommendations: `stream` vs a `refresh` process per interval.

    python bench/freshness.py [--history-events 400000] [--new-events 2000] [--new-users 200]
                              [--interval 5] [--duration 180]

Same as `interestlake bench freshness --json`; see interestlake.benchmarks.freshness_benchmark.
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "freshness", "--json", *sys.argv[1:]]))
