"""``bench freshness``: seconds from a landing file's appearance to the recommendations that include it.

Two paths on the same lake, one after the other, at the same cadence: ``interestlake stream``
(one long-running process), and the Airflow-style path, an ``interestlake refresh`` process per
interval (the Airflow DAG runs four spark-submits per run, so this is its best case).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from interestlake import constants as C
from interestlake.benchmarks.refresh import _START, _events, append_history, land_events, sample_catalog

log = logging.getLogger("interestlake")
PATHS = ("stream", "refresh")


def freshness_benchmark(
    history_events: int = 400_000,
    new_events: int = 2_000,
    new_users: int = 200,
    interval_seconds: float = 5.0,
    duration_seconds: float = 180.0,
    history_users: int = 2_000,
    items: int = 300,
    conf: str | None = None,
    workdir: str | None = None,
    seed: int = 7,
    paths: tuple[str, ...] = PATHS,
) -> dict[str, Any]:
    """Lands a file of ``new_events`` events every ``interval_seconds`` for ``duration_seconds`` per path.

    The lake first gets the sample catalog and ``history_events`` generated events, refreshed
    once (not timed). Then, for each path: ``stream`` runs ``interestlake stream`` while the
    files land; ``refresh`` starts an ``interestlake refresh`` process at every interval (right
    after the previous one ends when it took longer). A file's freshness is the time from its
    rename into the landing folder to the commit of the recommendations of the run that
    ingested it (the Delta commit's timestamp).

    Returns:
        ``{"benchmark": "freshness", "stream": {p50/p95/max seconds, where the time goes,
        memory}, "refresh": {...}, "p50_refresh_over_stream": ..., ...}``.
    """
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.run import RunContext
    from interestlake.settings import load_settings

    unknown = set(paths) - set(PATHS)
    if unknown or not paths:
        raise ValueError(f"paths must be a subset of {','.join(PATHS)}, got {','.join(paths)}")
    if new_users > history_users:
        raise ValueError(f"new_users ({new_users}) must be <= history_users ({history_users})")
    if interval_seconds <= 0 or duration_seconds < interval_seconds:
        raise ValueError("interval must be > 0 and duration at least one interval")
    root = Path(workdir or tempfile.mkdtemp(prefix="interestlake-bench-")) / f"freshness-{history_events}"
    env = {**os.environ, "INTERESTLAKE__LAKE__ROOT": str(root), "INTERESTLAKE__SPARK__LOG_LEVEL": "ERROR",
           "PYTHONUNBUFFERED": "1"}
    settings = load_settings(conf, env=env)
    landing = Path(settings.lake.landing_uri)
    catalog = sample_catalog(landing, items, seed)
    rng = np.random.default_rng(seed + history_events)
    with open_pipeline(settings, writer="bench-freshness-setup") as pipeline:
        append_history(pipeline, rng, history_events, history_users, catalog)
        pipeline.refresh(RunContext.create("bench-setup"))
    command = [sys.executable, "-m", "interestlake.cli"]
    conf_args = ["--conf", conf] if conf else []
    results: dict[str, Any] = {}
    files = 0
    for path in paths:
        landed: dict[str, float] = {}

        def land_one() -> None:
            nonlocal files
            name = f"fresh-{files:05d}.jsonl"
            batch = _events(rng, new_events, new_users, catalog, _START + timedelta(days=61, minutes=files), days=1,
                            prefix=f"f{files:05d}")
            landed[name] = land_events(landing / "events" / name, batch)
            files += 1

        log.info("bench freshness: %s path, a file every %ss for %ss", path, interval_seconds, duration_seconds)
        if path == "stream":
            results[path] = _stream_path([*command, "stream", *conf_args], env, land_one, interval_seconds, duration_seconds, root, landed)
        else:
            results[path] = _refresh_path([*command, "refresh", "-q", *conf_args], env, land_one, interval_seconds, duration_seconds)
        results[path].update(_freshness(root, landed))
    out = {
        "benchmark": "freshness",
        "history_events": history_events,
        "new_events": new_events,
        "new_users": new_users,
        "interval_seconds": interval_seconds,
        "duration_seconds": duration_seconds,
        "trigger_seconds": settings.stream.trigger_seconds,
        **results,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "workdir": str(root),
    }
    if set(PATHS) <= set(results):
        out["p50_refresh_over_stream"] = round(results["refresh"]["p50_seconds"] / results["stream"]["p50_seconds"], 2)
        out["p95_refresh_over_stream"] = round(results["refresh"]["p95_seconds"] / results["stream"]["p95_seconds"], 2)
    return out


def _tick(land_one, interval: float, duration: float, between=None) -> None:
    """Calls ``land_one`` every ``interval`` seconds for ``duration`` seconds (``between`` while waiting)."""
    start = time.monotonic()
    ticks = int(duration // interval)
    for tick in range(ticks):
        while time.monotonic() < start + tick * interval:
            if between is not None:
                between()
            time.sleep(0.05)
        land_one()


def _stream_path(command, env, land_one, interval, duration, root: Path, landed: dict[str, float]) -> dict[str, Any]:
    """Runs ``interestlake stream`` while the files land; stops it once every file is in."""
    from deltalake import DeltaTable

    from interestlake.benchmarks.memory import peak_memory

    stderr = open(root / "bench-stream.log", "w")  # noqa: SIM115 (closed below, after the process)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    try:
        _wait_for_line(root / "bench-stream.log", "stream: watching", process)
        with peak_memory(interval=1.0, pid=process.pid) as memory:
            _tick(land_one, interval, duration)
            deadline = time.monotonic() + max(120.0, 4 * interval)
            while time.monotonic() < deadline:
                rows = DeltaTable(str(root / C.LANDING_FILES)).to_pyarrow_table(columns=["source"]).column("source")
                if {Path(s).name for s in rows.to_pylist()} >= set(landed) and _batches_done(root, landed):
                    break
                time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=300)
        stderr.close()
    return {"exit_code": process.returncode, "memory": _memory_trend(memory.series)}


def _refresh_path(command, env, land_one, interval, duration) -> dict[str, Any]:
    """A ``refresh`` process for each interval's file, one at a time (``max_active_runs=1``, no catch-up).

    A file that lands while a refresh runs is taken by the next one, started as soon as that one ends.
    """
    processes: list[subprocess.Popen] = []
    seconds: list[float] = []
    pending = False
    started = 0.0

    def start_if_idle() -> None:
        nonlocal pending, started
        if processes and processes[-1].poll() is None:
            return
        if processes and len(seconds) < len(processes):
            seconds.append(time.monotonic() - started)
        if pending:
            processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            started, pending = time.monotonic(), False

    def land_then_refresh() -> None:
        nonlocal pending
        land_one()
        pending = True
        start_if_idle()

    _tick(land_then_refresh, interval, duration, between=start_if_idle)
    while pending or processes[-1].poll() is None:
        start_if_idle()
        time.sleep(0.05)
    start_if_idle()
    return {"refresh_processes": len(processes), "exit_codes": sorted({p.returncode for p in processes}),
            "process_seconds_median": round(float(np.median(seconds)), 2)}


def _wait_for_line(log_path: Path, text: str, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"interestlake stream did not start: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def _runs_of(root: Path, landed: dict[str, float]) -> dict[str, str]:
    """Landing file name -> run id of the run that ingested it."""
    from deltalake import DeltaTable

    rows = DeltaTable(str(root / C.LANDING_FILES)).to_pyarrow_table(columns=["source", C.COL_RUN_ID]).to_pylist()
    return {Path(r["source"]).name: r[C.COL_RUN_ID] for r in rows if Path(r["source"]).name in landed}


def _stage_rows(root: Path, run_ids: set[str]) -> dict[tuple[str, str], dict]:
    from deltalake import DeltaTable

    rows = DeltaTable(str(root / C.PIPELINE_RUNS)).to_pyarrow_table().to_pylist()
    return {(r[C.COL_RUN_ID], r["stage"]): r for r in rows if r[C.COL_RUN_ID] in run_ids}


def _batches_done(root: Path, landed: dict[str, float]) -> bool:
    """Every run that ingested a landed file has a successful recommend row."""
    runs = set(_runs_of(root, landed).values())
    stages = _stage_rows(root, runs)
    return all(stages.get((run, "recommend"), {}).get("status") == "succeeded" for run in runs)


def _freshness(root: Path, landed: dict[str, float]) -> dict[str, Any]:
    """p50/p95/max of file -> recommendations commit seconds, and where the time went (medians)."""
    from deltalake import DeltaTable

    runs = _runs_of(root, landed)
    stages = _stage_rows(root, set(runs.values()))
    commits = {entry["version"]: entry["timestamp"] / 1000 for entry in DeltaTable(str(root / C.RECOMMENDATIONS)).history()}
    ages, waits = [], []
    per_stage: dict[str, list[float]] = {}
    for name, appeared in landed.items():
        run = runs.get(name)
        recommend = stages.get((run, "recommend"))
        if recommend is None or recommend["status"] != "succeeded":
            continue
        version = dict(recommend["written_versions"] or []).get(C.RECOMMENDATIONS)
        done = commits.get(version) if version is not None else None
        ages.append((done if done is not None else _epoch(recommend["finished_at"])) - appeared)
        waits.append(_epoch(stages[(run, "ingest")]["started_at"]) - appeared)
        for stage in ("ingest", "encode", "interests", "recommend"):
            row = stages[(run, stage)]
            per_stage.setdefault(stage, []).append(_epoch(row["finished_at"]) - _epoch(row["started_at"]))
    if not ages:
        return {"files": len(landed), "files_done": 0}
    return {
        "files": len(landed),
        "files_done": len(ages),
        "runs": len(set(runs.values())),
        "p50_seconds": round(float(np.percentile(ages, 50)), 2),
        "p95_seconds": round(float(np.percentile(ages, 95)), 2),
        "max_seconds": round(float(np.max(ages)), 2),
        "median_seconds_until_ingest_starts": round(float(np.median(waits)), 2),
        "median_stage_seconds": {stage: round(float(np.median(v)), 3) for stage, v in per_stage.items()},
    }


def _epoch(when: datetime) -> float:
    # delta-rs hands timestamps back naive, in UTC.
    return when.timestamp() if when.tzinfo is not None else (when - datetime(1970, 1, 1)).total_seconds()


def _memory_trend(series: list[tuple[float, float, float]]) -> dict[str, Any]:
    """Medians of the second and the last fifth of the samples, per process kind, and their ratio.

    The first fifth is the warm-up (the first batches allocate what later ones reuse); growth
    after it is what would not stay flat over a long run. A busy stream's samples swing
    between its floor (between batches) and its peak (in one) by a batch's working memory,
    so each fifth's lowest and highest sample are reported as well: a floor that rises is
    memory kept, a median that rises alone is batches taking longer.
    """
    if len(series) < 10:
        return {"samples": len(series)}
    fifth = max(1, len(series) // 5)
    out: dict[str, Any] = {"samples": len(series)}
    for index, kind in enumerate(("driver_python", "driver_jvm", "python_worker")):
        second = [s[index] for s in series[fifth:2 * fifth]]
        last = [s[index] for s in series[-fifth:]]
        early, late = float(np.median(second)), float(np.median(last))
        out[kind] = {"second_fifth_mb": round(early, 1), "last_fifth_mb": round(late, 1),
                     "peak_mb": round(max(s[index] for s in series), 1),
                     "last_over_second": round(late / early, 3) if early else None,
                     "second_fifth_low_high_mb": [round(min(second), 1), round(max(second), 1)],
                     "last_fifth_low_high_mb": [round(min(last), 1), round(max(last), 1)]}
    return out
