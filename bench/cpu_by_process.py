"""Runs one command and prints, as one JSON object, its wall time and the CPU seconds of the processes it started.

    python bench/cpu_by_process.py [--every 0.3] -- COMMAND [ARG ...]

e.g. where a small refresh spends its CPU (JVM, Python driver, Spark's Python workers):

    INTERESTLAKE__LAKE__ROOT=/tmp/lake python bench/cpu_by_process.py -- interestlake refresh

Linux only: every process's user + system time is read from ``/proc/<pid>/stat`` every
``--every`` seconds while the command runs, so a process that lives shorter than that may be
missed, and the last fraction of a second of each one is. ``machine_busy_s`` is the whole
machine's busy CPU time over the run (``/proc/stat``), other work included: run it on a quiet
machine. Processes are grouped by kind: ``jvm`` (the java command's main class, or ``jvm``),
``python: <module or script>``, ``pyspark worker``, or the command's first word.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter

TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[tuple[str, str], tuple[float, str]]:
    """(pid, start time) -> (CPU seconds so far, command line) of every process readable now."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                fields = stat.read().rsplit(")", 1)[1].split()
                command = cmdline.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        # Fields after the command name: utime and stime are the 12th and 13th, starttime the 20th.
        found[(pid, fields[19])] = ((int(fields[11]) + int(fields[12])) / TICKS, command)
    return found


def _kind(command: str) -> str:
    words = command.split()
    if not words:
        return "pyspark worker"  # forked by pyspark.daemon after it cleared its command line
    program = os.path.basename(words[0])
    if program == "java":
        classes = [w for w in words if w.startswith("org.apache.")]
        return f"jvm {classes[0].rsplit('.', 1)[-1]}" if classes else "jvm"
    if program.startswith("python"):
        if "pyspark.daemon" in words or "pyspark.worker" in words:
            return "pyspark worker"
        module = words[words.index("-m") + 1] if "-m" in words[:-1] else (words[1] if len(words) > 1 else "")
        return f"python: {os.path.basename(module)}"
    return program


def _busy() -> float:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    return (sum(values[:8]) - values[3] - values[4]) / TICKS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=0.3, help="seconds between two reads of /proc")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    before = set(_processes())
    seen: dict[tuple[str, str], tuple[float, str]] = {}
    busy, started = _busy(), time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None:
        seen.update({key: value for key, value in _processes().items() if key not in before})
        time.sleep(args.every)
    wall, busy = time.monotonic() - started, _busy() - busy
    by_kind: Counter[str] = Counter()
    for cpu, line in seen.values():
        by_kind[_kind(line)] += cpu
    print(json.dumps({
        "command": command, "exit_code": process.returncode, "wall_s": round(wall, 1),
        "machine_busy_s": round(busy, 1), "cores": os.cpu_count(),
        "cpu_s_by_kind": {kind: round(cpu, 1) for kind, cpu in by_kind.most_common()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
