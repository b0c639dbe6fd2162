"""spark-submit entry point of the ingest stage.

    spark-submit jobs/ingest.py [--conf conf/cluster.yaml] [--run-id ID] [--logical-date ISO]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
