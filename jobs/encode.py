"""spark-submit entry point of the encode stage.

    spark-submit jobs/encode.py [--conf conf/cluster.yaml] [--run-id ID] [--logical-date ISO]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["encode", *sys.argv[1:]]))
