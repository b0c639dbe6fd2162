"""Prints one JSON object: the scoring path and the encoder on CUDA and on the CPU (no Spark needed).

    python bench/cuda.py [--users N] [--items N] [--texts N] [--devices cpu,cuda] [--model-path DIR] [--conf FILE]

See ``interestlake.benchmarks.cuda``. numpy's and OpenMP's threads are set to one before
anything imports them: the CPU scoring runs as one Spark task does (the CPU encoder run sets
torch's threads to every core itself).
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from interestlake.benchmarks.cuda import cuda_benchmark  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--texts", type=int, default=4_000)
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--conf", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    print(json.dumps(cuda_benchmark(users=args.users, items=args.items, texts=args.texts, conf=args.conf,
                                    model_path=args.model_path, devices=tuple(args.devices.split(","))), indent=1))
