"""spark-submit entry point of `interestlake forget` (a user leaves every table, then vacuum).

    spark-submit jobs/forget.py USER_ID [--conf conf/cluster.yaml]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["forget", *sys.argv[1:]]))
