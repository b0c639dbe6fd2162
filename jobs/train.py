"""spark-submit entry point of `interestlake train` (the daily model task of interestlake_maintenance).

    spark-submit jobs/train.py [--conf conf/cluster.yaml] [--promote]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
