"""Prints one JSON object; same as `interestlake bench score --json`.

    python bench/score.py [options of `interestlake bench --help`]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "score", "--json", *sys.argv[1:]]))
