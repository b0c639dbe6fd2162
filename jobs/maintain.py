"""spark-submit entry point of table maintenance (retention, compaction, vacuum, checkpoints).

    spark-submit jobs/maintain.py [--conf conf/cluster.yaml] [--steps compact,vacuum] [--logical-date ISO]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["maintain", *sys.argv[1:]]))
