"""``bench refresh``: one incremental refresh vs a full recompute over growing histories."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from interestlake import constants as C

log = logging.getLogger("interestlake")
_START = datetime(2026, 9, 1, tzinfo=timezone.utc)
_EVENTS_PER_FILE = 200_000


def refresh_benchmark(
    history_sizes: Sequence[int] = (10_000, 100_000, 400_000),
    new_events: int = 2_000,
    new_users: int = 200,
    history_users: int = 2_000,
    items: int = 300,
    conf: str | None = None,
    workdir: str | None = None,
    seed: int = 7,
) -> dict[str, Any]:
    """Incremental refresh vs full recompute for one batch of new events over growing histories.

    For each history size: a lake with the sample catalog and ``size`` generated
    events is refreshed once (not timed); then ``new_events`` events from
    ``new_users`` existing users land, and the benchmark times one incremental
    ``refresh`` and then one full recompute (``refresh --full``) of the same
    state, and compares their ``user_interests`` and ``recommendations``.

    Returns:
        ``{"benchmark": "refresh", "results": [per size: history_events,
        incremental_seconds, full_seconds, interests_max_abs_diff,
        recommendations_equal, ...], ...}``.
    """
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.run import RunContext
    from interestlake.settings import load_settings

    if new_users > history_users:
        raise ValueError(f"new_users ({new_users}) must be <= history_users ({history_users})")
    base = Path(workdir or tempfile.mkdtemp(prefix="interestlake-bench-"))
    results = []
    for size in history_sizes:
        root = base / f"history-{size}"
        settings = load_settings(conf, env={"INTERESTLAKE__LAKE__ROOT": str(root), "INTERESTLAKE__SPARK__LOG_LEVEL": "ERROR"})
        landing = Path(settings.lake.landing_uri)
        catalog = sample_catalog(landing, items, seed)
        rng = np.random.default_rng(seed + size)
        with open_pipeline(settings, writer=f"bench-{size}") as pipeline:
            append_history(pipeline, rng, size, history_users, catalog)
            pipeline.refresh(RunContext.create("bench-setup", "2026-11-10T00:00:00Z"))

            batch = _events(rng, new_events, new_users, catalog, _START + timedelta(days=61), days=1, prefix="n")
            land_events(landing / "events" / "bench-new.jsonl", batch)
            started = time.perf_counter()
            reports = pipeline.refresh(RunContext.create("bench-incremental", "2026-11-10T00:05:00Z"))
            incremental = time.perf_counter() - started
            changed = _snapshot(pipeline.lake)
            started = time.perf_counter()
            full_reports = pipeline.refresh(RunContext.create("bench-full", "2026-11-10T00:10:00Z"), full=True)
            full = time.perf_counter() - started
            recomputed = _snapshot(pipeline.lake)
        by_stage = {r.stage: r for r in reports}
        results.append(
            {
                "history_events": size + _count_sample_events(landing),
                "incremental_seconds": round(incremental, 2),
                "full_seconds": round(full, 2),
                "interests_max_abs_diff": _max_abs_diff(changed[0], recomputed[0]),
                "recommendations_equal": changed[1] == recomputed[1],
                "users_changed": by_stage["interests"].counts.get("users_changed", 0),
                "users": len(recomputed[0]),
                "incremental_stage_seconds": {r.stage: r.counts.get("seconds") for r in reports},
                "full_stage_seconds": {r.stage: r.counts.get("seconds") for r in full_reports},
            }
        )
        log.info("bench refresh: %s", results[-1])
    smallest, largest = results[0], results[-1]
    return {
        "benchmark": "refresh",
        "new_events": new_events,
        "new_users": new_users,
        "items": items,
        "results": results,
        "incremental_largest_over_smallest": round(largest["incremental_seconds"] / smallest["incremental_seconds"], 2),
        "full_over_incremental_at_largest": round(largest["full_seconds"] / largest["incremental_seconds"], 2),
        "workdir": str(base),
    }


def sample_catalog(landing: Path, items: int, seed: int) -> list[str]:
    """Writes the sample landing files (50 users, ``items`` items) and returns the catalog's item ids."""
    from interestlake.datasets.sample import generate_sample

    generate_sample(landing, seed=seed, n_users=50, n_items=items, days=30)
    return [json.loads(line)[C.COL_ITEM_ID] for line in (landing / "items" / "items-0001.jsonl").read_text().splitlines()]


def append_history(pipeline, rng, size: int, users: int, catalog: list[str]) -> None:
    """Appends ``size`` generated events of ``users`` users straight to the ``events`` table."""
    log.info("bench: %d history events", size)
    history = _events(rng, size, users, catalog, _START, days=60, prefix="h")
    # Files of at most _EVENTS_PER_FILE events, as a compacted lake holds its history: Spark's
    # pandas conversion alone makes one file per Arrow batch (1,024 rows), 1,958 files at 2M.
    files = max(1, math.ceil(size / _EVENTS_PER_FILE))
    pipeline.lake.append(C.EVENTS, pipeline.spark.createDataFrame(history).repartition(files), metadata={"stage": "bench"})


def land_events(path: Path, batch) -> float:
    """Writes events as a landing file the way a producer should (hidden name, then rename).

    Returns:
        The time (epoch seconds) the file appeared under its name.
    """
    hidden = path.with_name(f".{path.name}.tmp")
    hidden.write_text("\n".join(json.dumps({**row, C.COL_TS: row[C.COL_TS].isoformat()}) for row in batch.to_dict("records")) + "\n")
    hidden.rename(path)
    return time.time()


def _events(rng, count: int, users: int, catalog: list[str], start: datetime, days: int, prefix: str):
    """Random item events (views most, purchases least) by ``users`` users within ``days``."""
    import pandas as pd

    kinds = np.array([C.EVENT_VIEW, C.EVENT_CLICK, C.EVENT_CART, C.EVENT_PURCHASE])
    offsets = np.sort(rng.uniform(0, days * 86_400, count))
    return pd.DataFrame(
        {
            C.COL_EVENT_ID: [f"{prefix}-{n:08d}" for n in range(count)],
            C.COL_USER_ID: [f"bench-{u:05d}" for u in rng.integers(0, users, count)],
            C.COL_ITEM_ID: np.array(catalog)[rng.integers(0, len(catalog), count)],
            C.COL_EVENT_TYPE: kinds[rng.choice(4, count, p=[0.6, 0.25, 0.1, 0.05])],
            C.COL_TS: [start.replace(tzinfo=None) + timedelta(seconds=float(s)) for s in offsets],
        }
    )


def _count_sample_events(landing: Path) -> int:
    import gzip

    total = 0
    for path in (landing / "events").iterdir():
        if path.name.startswith("events-"):
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            total += sum(1 for line in data.splitlines() if line.strip())
    return total


def _snapshot(lake):
    interests = {r.user_id: np.array(r.interest) for r in lake.read(C.USER_INTERESTS).select("user_id", "interest").collect()}
    recs = sorted(tuple(r) for r in lake.read(C.RECOMMENDATIONS).select("user_id", "rank", "item_id").collect())
    return interests, recs


def _max_abs_diff(left: dict, right: dict) -> float | None:
    if left.keys() != right.keys():
        return None
    return float(max((np.abs(left[u] - right[u]).max() for u in left), default=0.0))
