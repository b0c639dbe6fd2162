"""spark-submit entry point of continuous mode (runs until SIGTERM / SIGINT).

    spark-submit jobs/stream.py [--conf conf/cluster.yaml] [--wait SECONDS] [--verbose]
"""

import sys

from interestlake.cli import main

if __name__ == "__main__":
    sys.exit(main(["stream", *sys.argv[1:]]))
