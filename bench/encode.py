"""Prints one JSON object; same as `interestlake bench encode --json`.

    python bench/encode.py [options of `interestlake bench --help`]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "encode", "--json", *sys.argv[1:]]))
