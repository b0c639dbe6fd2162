"""Incremental refresh vs full recompute over growing histories; prints one JSON object.

    python bench/refresh.py [--sizes 10000,100000,400000] [--new-events 2000] [--new-users 200]

Same as `interestlake bench refresh --json`; see interestlake.benchmarks.refresh_benchmark.
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "refresh", "--json", *sys.argv[1:]]))
