"""spark-submit entry point of the refresh stage.

    spark-submit jobs/refresh.py [--conf conf/cluster.yaml] [--run-id ID] [--logical-date ISO]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["refresh", *sys.argv[1:]]))
