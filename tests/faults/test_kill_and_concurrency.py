"""Real `interestlake refresh` processes: killed at random moments, or started twice at once."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from interestlake import constants as C
from interestlake.datasets.sample import generate_sample

from tests.conftest import REPO, make_settings

pytestmark = [pytest.mark.faults, pytest.mark.slow]
STAGES = ["ingest", "encode", "interests", "recommend"]
KILLS = 10


class Refresh:
    """One `interestlake refresh` (or other `command`) process in its own process group, its stderr followed."""

    def __init__(self, root: Path, command: tuple[str, ...] = ("refresh",)):
        env = {**os.environ, "INTERESTLAKE__LAKE__ROOT": str(root), "INTERESTLAKE__SPARK__MASTER": "local[2]",
               "INTERESTLAKE__SPARK__CONF__spark.ui.enabled": "false", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "interestlake.cli", *command, "--conf", str(REPO / "conf" / "local.yaml")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self.started: dict[str, float] = {}
        self.done: set[str] = set()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self):
        for line in self.process.stderr:
            self.lines.append(line)
            for stage in STAGES:
                if f"{stage}: started" in line:
                    self.started[stage] = time.monotonic()
                if f"{stage}: done in" in line:
                    self.done.add(stage)

    def kill_after(self, stage: str, delay: float, timeout: float = 240) -> str | None:
        """SIGKILLs the whole group `delay` s after `stage` started.

        Returns:
            The stage that was running when the kill landed ("between stages" after one
            ended and before the next started), or None when the process ended first.
        """
        deadline = time.monotonic() + timeout
        # Polled often: a small batch's stage may last only tens of milliseconds.
        while stage not in self.started and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if stage in self.started:
            time.sleep(max(0.0, self.started[stage] + delay - time.monotonic()))
        if self.process.poll() is not None:
            return None
        running = [name for name in self.started if name not in self.done]
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        return running[-1] if running else "between stages"

    def finish(self, timeout: float = 400) -> int:
        code = self.process.wait(timeout=timeout)
        self.process.stdout.read()
        return code


def refresh_in_process(spark, root: Path, run_id: str):
    """One uninterrupted refresh of ``root`` in the test session; returns the open lake."""
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.refresh import Pipeline
    from interestlake.pipeline.run import RunContext

    settings = make_settings(root)
    lake = open_lake(spark, settings.lake)
    lake.ensure_tables()
    Pipeline(spark, lake, settings).refresh(RunContext.create(run_id))
    return lake


def comparable(lake):
    """Each table as a sorted list of rows, without what legitimately differs between lakes."""
    def rows(table, columns):
        return sorted(tuple(r) for r in lake.read(table).select(*columns).collect())

    return {
        C.EVENTS: rows(C.EVENTS, ["event_id", "user_id", "item_id", "event_type", "ts", "text", "rating"]),
        C.REVIEWS: rows(C.REVIEWS, ["review_id", "user_id", "item_id", "rating", "text", "ts"]),
        C.ITEMS: rows(C.ITEMS, ["item_id", "title", "description", "category", "price", "updated_at"]),
        C.TEXT_EMBEDDINGS: rows(C.TEXT_EMBEDDINGS, ["text_hash", "encoder_version"]),
        C.ITEM_EMBEDDINGS: rows(C.ITEM_EMBEDDINGS, ["item_id", "encoder_version", "text_hash"]),
        C.RECOMMENDATIONS: rows(C.RECOMMENDATIONS, ["user_id", "rank", "item_id"]),
    }


def why_ended(lines: list[str]) -> str:
    """The lines that say why a process ended: its error lines (a Spark error's plan left out), else its last lines."""
    errors = [line for line in lines if any(word in line for word in ("Error", "Exception", "Traceback", "interestlake "))]
    return "".join(errors[-10:] or lines[-8:])


def extra_events(batch: int, items: list[str]) -> list[dict]:
    """A small new batch: a few users act, one searches (new text to encode)."""
    users = [f"u-{(batch * 3 + n) % 20 + 1:04d}" for n in range(3)]
    events = [
        {"event_id": f"x{batch}-{n}", "user_id": user, "item_id": items[(batch * 7 + n) % len(items)],
         "event_type": ["view", "cart", "purchase"][n], "ts": f"2026-11-0{1 + batch % 5}T0{n}:00:00Z"}
        for n, user in enumerate(users)
    ]
    events.append({"event_id": f"x{batch}-q", "user_id": users[0], "item_id": None, "event_type": "search",
                   "text": f"gift idea number {batch}", "ts": f"2026-11-0{1 + batch % 5}T05:00:00Z"})
    return events


def test_refresh_killed_at_random_moments_converges_to_an_uninterrupted_run(spark, tmp_path):
    from interestlake.lake.tables import open_lake

    faulted_root, reference_root = tmp_path / "faulted", tmp_path / "reference"
    for root in (faulted_root, reference_root):
        generate_sample(make_settings(root).lake.landing_uri, seed=11, n_users=20, n_items=24, days=20)
    items_file = faulted_root / "landing" / "items" / "items-0001.jsonl"
    items = [json.loads(line)["item_id"] for line in items_file.read_text().splitlines()]

    rng = random.Random(20261123)
    kills = []
    # Attempts whose refresh ended before the kill: its exit code and last lines, for the failure message.
    ended = []
    batches = 0

    def missed() -> list[str]:
        return [stage for stage in STAGES if stage not in {running for _, _, running in kills}]

    # KILLS attempts round the stages, then (at most 8) more aimed at any stage no kill landed in:
    # small batches take a stage well under a second on the driver, so a kill can land in the next.
    while batches < KILLS or (missed() and batches < KILLS + 8):
        # New work arrives before every attempt, so every stage has something to do.
        landing_file = faulted_root / "landing" / "events" / f"extra-{batches:02d}.jsonl"
        landing_file.write_text("\n".join(json.dumps(e) for e in extra_events(batches, items)) + "\n")
        stage = STAGES[batches % len(STAGES)] if batches < KILLS else missed()[0]
        delay = rng.uniform(0.0, 0.6 if batches < KILLS else 0.1)
        refresh = Refresh(faulted_root)
        landed = refresh.kill_after(stage, delay)
        if landed:
            kills.append((stage, round(delay, 2), landed))
        else:
            ended.append((stage, refresh.process.returncode, why_ended(refresh.lines)))
        batches += 1
    print(f"killed (target stage, delay, stage running at the kill): {kills}")
    assert len(kills) >= KILLS - 2, f"most attempts must really be killed mid-run: {kills}; ended first: {ended[:3]}"
    assert not missed(), f"every stage must be killed while it runs: {kills}"
    final = Refresh(faulted_root)
    assert final.finish() == 0, "".join(final.lines[-30:])

    for batch in range(batches):
        landing_file = reference_root / "landing" / "events" / f"extra-{batch:02d}.jsonl"
        landing_file.write_text("\n".join(json.dumps(e) for e in extra_events(batch, items)) + "\n")
    # The uninterrupted run, in this process's session: the same pipeline without a JVM to start.
    expected = refresh_in_process(spark, reference_root, "reference")

    faulted = open_lake(spark, make_settings(faulted_root).lake)
    got, want = comparable(faulted), comparable(expected)
    for table in want:
        assert got[table] == want[table], f"{table} differs after kills at {kills}"
    assert len({r[0] for r in got[C.EVENTS]}) == len(got[C.EVENTS])  # no duplicate event ids
    vectors = {r.user_id: np.array(r.interest) for r in faulted.read(C.USER_INTERESTS).collect()}
    reference_vectors = {r.user_id: np.array(r.interest) for r in expected.read(C.USER_INTERESTS).collect()}
    assert vectors.keys() == reference_vectors.keys()
    assert max(np.abs(vectors[u] - reference_vectors[u]).max() for u in vectors) <= 1e-5


def test_two_refreshes_started_at_once_only_one_writes(spark, tmp_path):
    from interestlake.lake.tables import open_lake

    root = tmp_path / "lake"
    generate_sample(make_settings(root).lake.landing_uri, seed=12, n_users=10, n_items=30, days=10)
    first, second = Refresh(root), Refresh(root)
    codes = sorted([first.finish(), second.finish()])
    assert codes == [0, 3], (first.lines[-5:], second.lines[-5:])
    loser = first if first.process.returncode == 3 else second
    assert any("another writer is using the lake" in line for line in loser.lines)
    lake = open_lake(spark, make_settings(root).lake)
    runs = {r.run_id for r in lake.read(C.PIPELINE_RUNS).collect()}
    assert len(runs) == 1  # only the winner recorded stages
    recs = lake.read(C.RECOMMENDATIONS).collect()
    assert len(recs) == 10 * 10 and len({(r.user_id, r.rank) for r in recs}) == len(recs)
