"""Wall time of one `interestlake sql` command per engine, run in turns on the same lake; prints one JSON object.

    python bench/sql.py [--conf conf/local.yaml] [--runs 5] [--query "SELECT count(*) AS n FROM recommendations"]

Each run is a new `interestlake` process, as a user types it: the in-process engine
(DuckDB) against `--engine spark` (a JVM and a Spark session per command). The ratio
is of medians measured in the same run; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default=None, help="settings file (default: as `interestlake` finds it)")
    parser.add_argument("--runs", type=int, default=5, help="commands per engine (default 5)")
    parser.add_argument("--query", default="SELECT count(*) AS n FROM recommendations")
    args = parser.parse_args()
    command = [shutil.which("interestlake") or "interestlake", "sql", "--json", args.query]
    if args.conf:
        command += ["--conf", args.conf]
    seconds: dict[str, list[float]] = {"duckdb": [], "spark": []}
    answers = {}
    for _ in range(args.runs):
        for engine in seconds:  # in turns, so that a change of load hits both
            start = time.perf_counter()
            done = subprocess.run([*command, "--engine", engine], capture_output=True, text=True, check=True)
            seconds[engine].append(round(time.perf_counter() - start, 3))
            answers[engine] = json.loads(done.stdout)
    if answers["duckdb"] != answers["spark"]:
        raise SystemExit(f"the engines disagree: {answers}")
    medians = {engine: statistics.median(times) for engine, times in seconds.items()}
    print(json.dumps({
        "query": args.query, "answer": answers["duckdb"], "runs": args.runs, "seconds": seconds,
        "median_seconds": medians, "spark_over_duckdb": round(medians["spark"] / medians["duckdb"], 1),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
