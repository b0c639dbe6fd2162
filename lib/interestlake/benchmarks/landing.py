"""Peak memory of parsing one huge landing file, as a Spark Python worker parses it.

Each measured file is parsed in a fresh child process by the ingest stage's own
executor function (``ingest._parse_files``, which a Python worker runs inside
``mapInPandas``), its DataFrames turned into Arrow record batches as Spark would
ship them and then dropped; the child's peak resident memory (``ru_maxrss``) is the
figure. Files: a JSON Lines events file of the given size, and one holding a single
line of the given size between two normal lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

_LINE = ('{{"event_id": "e{n}", "user_id": "u{u}", "item_id": "i{i}", "event_type": "view", '
         '"ts": "2026-10-01T12:00:00Z", "text": null, "session": "s-{n}"}}\n')


def write_events(path: Path, size_bytes: int) -> int:
    """Writes ``size_bytes`` (about) of distinct events; returns the number of lines."""
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        written = 0
        while written < size_bytes:
            block = "".join(_LINE.format(n=n + k, u=(n + k) % 5000, i=(n + k) % 700) for k in range(10_000))
            out.write(block)
            written += len(block)
            n += 10_000
    return n


def write_long_line(path: Path, line_bytes: int) -> None:
    """One normal event, one event whose search text is ``line_bytes`` long, one normal event."""
    normal = _LINE.format(n=1, u=1, i=1)
    with open(path, "w", encoding="utf-8") as out:
        out.write(normal)
        out.write('{"event_id": "long", "user_id": "u1", "event_type": "search", "ts": "2026-10-01T12:00:00Z", "text": "')
        chunk = "kettle " * (1 << 17)
        for _ in range(line_bytes // len(chunk)):
            out.write(chunk)
        out.write('"}\n')
        out.write(_LINE.format(n=2, u=1, i=1))


def _parse_in_this_process(path: str) -> dict:
    import pandas as pd
    import pyarrow as pa

    from interestlake import constants as C
    from interestlake.pipeline.ingest import _parse_files, _parse_schema
    from interestlake.lake.schemas import arrow_schema

    schema = _parse_schema(C.EVENTS)
    arrow = arrow_schema(schema)
    paths = pd.DataFrame({"path": [path], "mtime": [pd.Timestamp.now(tz="UTC").tz_localize(None)]})
    rows, reasons = 0, {}
    for frame in _parse_files(C.EVENTS, schema, None)(iter([paths])):
        batch = pa.RecordBatch.from_pandas(frame, schema=arrow, preserve_index=False)
        rows += batch.num_rows
        for reason in frame["reason"].dropna():
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"rows": rows, "rejected": reasons}


def measure(path: Path) -> dict:
    """Parses one file in a child process; its row counts, seconds and peak RSS."""
    started = time.perf_counter()
    code = ("import json; from interestlake.benchmarks.landing import _parse_in_this_process; "
            f"print(json.dumps(_parse_in_this_process({str(path)!r})))")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = child.stdout.read()
    # wait4: this child's own peak resident memory (RUSAGE_CHILDREN would be the peak of all children so far).
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"parsing {path.name} failed")
    peak_kb = usage.ru_maxrss
    return {"file": path.name, "file_mb": round(path.stat().st_size / 2**20, 1),
            "seconds": round(time.perf_counter() - started, 1), **json.loads(out.strip().splitlines()[-1]),
            "python_worker_peak_mb": round(peak_kb / 1024, 1)}


def landing_memory_benchmark(workdir: Path, events_mb: int = 2048, line_mb: int = 200) -> dict:
    """Writes the two files under ``workdir`` and measures each in its own child process."""
    from interestlake.datasets.landing import MAX_LINE_BYTES

    workdir.mkdir(parents=True, exist_ok=True)
    long_line, events = workdir / "long-line.jsonl", workdir / "events.jsonl"
    write_long_line(long_line, line_mb << 20)
    write_events(events, events_mb << 20)
    results = [measure(long_line), measure(events)]
    for path in (long_line, events):
        path.unlink()
    return {"benchmark": "landing_memory", "max_line_mb": MAX_LINE_BYTES >> 20, "results": results,
            "load_average": os.getloadavg()}
