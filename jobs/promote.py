"""spark-submit entry point of `interestlake promote` (the daily model task of interestlake_maintenance).

    spark-submit jobs/promote.py [--conf conf/cluster.yaml] [--version N]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]]))
