"""Real `interestlake stream` processes: files landed one after another, SIGTERM, a refresh meanwhile,
and SIGKILL in every stage; each time the tables must be those of `refresh` over the same files.

Both lakes are first refreshed over the same generated sample in this process (the shared session),
so the streams only see the small batches that continuous mode is for.
"""

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from interestlake import constants as C
from interestlake.datasets.sample import generate_sample

from tests.conftest import make_settings
from tests.faults.test_kill_and_concurrency import STAGES, Refresh, comparable, extra_events, refresh_in_process

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.e2e]


class StreamProcess(Refresh):
    """`interestlake stream --verbose` (stage lines included), followed like a refresh."""

    def __init__(self, root: Path):
        super().__init__(root, ("stream", "--verbose"))

    def wait_for(self, text: str, after: int = 0, timeout: float = 240) -> int:
        """Index of the first line from ``after`` on that contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(after, len(self.lines)):
                if text in self.lines[index]:
                    return index
            assert self.process.poll() is None, f"stream exited with {self.process.returncode}: {''.join(self.lines[-30:])}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s: {''.join(self.lines[-30:])}"
            time.sleep(0.05)

    def watching(self) -> int:
        """Waits until the query runs; stage lines of the start-up pass are forgotten."""
        index = self.wait_for("stream: watching")
        self.started.clear()
        self.done.clear()
        return index


def land(root: Path, name: str, events: list[dict]) -> Path:
    """Writes an events file under a hidden name, then renames it: the file appears complete."""
    folder = root / "landing" / "events"
    hidden = folder / f".{name}.tmp"
    hidden.write_text("".join(json.dumps(e) + "\n" for e in events))
    return hidden.rename(folder / name)


def assert_same_tables(got_lake, want_lake, context: str):
    got, want = comparable(got_lake), comparable(want_lake)
    for table in want:
        assert got[table] == want[table], f"{table} differs {context}"
    vectors = {r.user_id: np.array(r.interest) for r in got_lake.read(C.USER_INTERESTS).collect()}
    wanted = {r.user_id: np.array(r.interest) for r in want_lake.read(C.USER_INTERESTS).collect()}
    assert vectors.keys() == wanted.keys()
    assert max(np.abs(vectors[u] - wanted[u]).max() for u in vectors) <= 1e-5, context


@pytest.fixture(scope="module")
def lakes(spark, tmp_path_factory):
    """(streamed root, reference root, catalog item ids): the same sample, refreshed once each."""
    base = tmp_path_factory.mktemp("stream")
    roots = base / "streamed", base / "reference"
    for root in roots:
        generate_sample(make_settings(root).lake.landing_uri, seed=13, n_users=12, n_items=16, days=10)
        refresh_in_process(spark, root, "sample")
    items_file = roots[0] / "landing" / "items" / "items-0001.jsonl"
    items = [json.loads(line)["item_id"] for line in items_file.read_text().splitlines()]
    return *roots, items


def test_stream_takes_files_as_they_land_like_one_refresh_and_stops_on_sigterm(spark, lakes):
    from interestlake.lake.lock import lock_holder

    streamed, reference, items = lakes
    stream = StreamProcess(streamed)
    seen = stream.watching()
    for batch in range(2):
        land(streamed, f"extra-{batch}.jsonl", extra_events(batch, items))
        seen = stream.wait_for("stream batch", seen) + 1

    # A refresh while the stream runs leaves the lake alone and names the stream.
    refresh = Refresh(streamed)
    assert refresh.finish(timeout=120) == 3
    assert any("another writer is using the lake" in line and '"owner": "stream__' in line for line in refresh.lines)

    # An ingest that waits for the lock (as the catalog DAG's jobs do) gets a turn. It must leave
    # the stream's checkpoint alone: its own query there replayed or advanced the stream's batches,
    # and the stream ended at its next one ("Concurrent update to the log"). The file landed just
    # before is the stream's to take.
    land(streamed, "extra-turn.jsonl", extra_events(5, items))
    waiting = Refresh(streamed, ("ingest", "--wait", "120"))
    assert waiting.finish(timeout=180) == 0, "".join(waiting.lines[-20:])
    assert any("runs on this lake and ingests what lands" in line for line in waiting.lines), "".join(waiting.lines[-20:])
    seen = stream.wait_for("stream batch", seen) + 1

    # SIGTERM while the third file's batch runs: that batch ends, no other starts, exit 0.
    land(streamed, "extra-2.jsonl", extra_events(2, items))
    seen = stream.wait_for("ingest: started", seen)
    stream.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert stream.finish(timeout=120) == 0, "".join(stream.lines[-30:])
    after_signal = "".join(stream.lines[seen:])
    assert "SIGTERM received" in after_signal and after_signal.count("stream batch") == 1
    assert time.monotonic() - sent < 60
    assert lock_holder(str(streamed)) is None

    for batch in range(3):
        land(reference, f"extra-{batch}.jsonl", extra_events(batch, items))
    land(reference, "extra-turn.jsonl", extra_events(5, items))
    want = refresh_in_process(spark, reference, "reference-4-files")
    got = make_lake(spark, streamed)
    assert_same_tables(got, want, "between four streamed batches and one refresh")
    # Each batch recorded its four stages, and its freshness with recommend.
    runs = got.read_rows(C.PIPELINE_RUNS, columns=["run_id", "stage", "status", "counts"])
    batches = {r["run_id"] for r in runs if r["run_id"].startswith("stream__") and r["stage"] == "ingest"}
    assert len(batches) == 4
    for batch in batches:
        rows = {r["stage"]: r for r in runs if r["run_id"] == batch}
        assert sorted(rows) == sorted(STAGES) and {r["status"] for r in rows.values()} == {"succeeded"}
        counts = dict(rows["recommend"]["counts"])
        assert 0 <= counts["freshness_min_ms"] <= counts["freshness_max_ms"] < 120_000


def test_stream_killed_in_every_stage_converges_to_an_uninterrupted_refresh(spark, lakes):
    streamed, reference, items = lakes
    rng = random.Random(20261202)
    landed, kills = [], []

    def missed() -> list[str]:
        return [stage for stage in STAGES if stage not in {running for _, running in kills}]

    attempt = 0
    # One attempt per stage at a random point early in it, then (at most 4) more, each aimed at
    # the next stage no kill landed in, killed as soon as it starts: a small batch's stage takes
    # well under a second (the interests stage a few tens of milliseconds), so a kill a random
    # delay in can land in the next one (seen in CI: interests missed, its one retry used on encode).
    while missed() and attempt < len(STAGES) + 4:
        first_round = attempt < len(STAGES)
        stage = STAGES[attempt] if first_round else missed()[(attempt - len(STAGES)) % len(missed())]
        stream = StreamProcess(streamed)
        stream.watching()
        name = f"killed-{attempt}.jsonl"
        landed.append(name)
        land(streamed, name, extra_events(10 + attempt, items))
        delay = rng.uniform(0.0, 0.1 if stage != "encode" else 0.5) if first_round else 0.0
        running = stream.kill_after(stage, delay)
        assert running is not None, "".join(stream.lines[-30:])
        kills.append((stage, running))
        attempt += 1
    print(f"killed (target stage, stage running at the kill): {kills}")
    assert not missed(), f"every stage must be killed while it runs: {kills}"

    # The restart replays the unfinished batch, then takes one more file; stop it once both are in.
    stream = StreamProcess(streamed)
    seen = stream.watching()
    landed.append("after-kills.jsonl")
    land(streamed, landed[-1], extra_events(20, items))
    lake = make_lake(spark, streamed)
    while True:
        seen = stream.wait_for("stream batch", seen) + 1
        recorded = {Path(r["source"]).name for r in lake.read_rows(C.LANDING_FILES, columns=["source"])}
        if set(landed) <= recorded:
            break
    stream.process.send_signal(signal.SIGTERM)
    assert stream.finish(timeout=120) == 0, "".join(stream.lines[-30:])

    for name, attempt in zip(landed, [*range(10, 10 + len(landed) - 1), 20]):
        land(reference, name, extra_events(attempt, items))
    want = refresh_in_process(spark, reference, "reference-after-kills")
    assert_same_tables(make_lake(spark, streamed), want, f"after kills at {kills}")
    events = [r[0] for r in comparable(make_lake(spark, streamed))[C.EVENTS]]
    assert len(events) == len(set(events))


def make_lake(spark, root: Path):
    from interestlake.lake.tables import open_lake

    return open_lake(spark, make_settings(root).lake)
