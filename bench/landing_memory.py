"""Peak memory of the Python worker parsing a huge JSON Lines file and a file with one huge line.

    python bench/landing_memory.py [--events-mb 2048] [--line-mb 200] [--workdir DIR]

Prints one JSON object; see interestlake.benchmarks.landing.
"""

import argparse
import json
import tempfile
from pathlib import Path

from interestlake.benchmarks.landing import landing_memory_benchmark

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-mb", type=int, default=2048)
    parser.add_argument("--line-mb", type=int, default=200)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(landing_memory_benchmark(Path(args.workdir or tmp), args.events_mb, args.line_mb)))
