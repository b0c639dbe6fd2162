"""spark-submit entry point of the interests stage.

    spark-submit jobs/interests.py [--conf conf/cluster.yaml] [--run-id ID] [--logical-date ISO]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["interests", *sys.argv[1:]]))
