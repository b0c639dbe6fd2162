"""spark-submit entry point of the recommend stage.

    spark-submit jobs/recommend.py [--conf conf/cluster.yaml] [--run-id ID] [--logical-date ISO]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["recommend", *sys.argv[1:]]))
