"""Continuous mode in this process (the shared session): what changes between batches is applied.

A changed setting (a new K) re-scores every user without any file landing; a catalog file is
ingested like any other and re-scores every user once, as in refresh; a writer asking for a turn
gets one even while files land faster than batches end.
"""

import json
import threading
import time

import pytest

from interestlake import constants as C
from interestlake.datasets.sample import generate_sample

from tests.conftest import make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.spark]


def wait_until(condition, what: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.2)


def test_stream_applies_a_settings_change_and_a_catalog_file_between_batches(spark, tmp_path):
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.stream import Stream

    root = tmp_path / "lake"
    sample = generate_sample(f"{root}/landing", seed=17, n_users=8, n_items=12, days=10)
    conf = {"INTERESTLAKE__STREAM__TRIGGER_SECONDS": "1", "INTERESTLAKE__RECOMMEND__K": "6"}
    stream = Stream(make_settings(root, conf), reload=lambda: make_settings(root, conf))
    stream.compact_every = 2  # instead of every 100 batches
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    try:
        lake = open_lake(spark, make_settings(root).lake)

        def lists() -> dict[str, list[dict]]:
            by_user: dict[str, list[dict]] = {}
            for row in lake.read_rows(C.RECOMMENDATIONS):
                by_user.setdefault(row[C.COL_USER_ID], []).append(row)
            return by_user

        wait_until(lambda: stream.batches >= 1 and len(lists()) == sample.users, "first batch")
        assert {len(rows) for rows in lists().values()} == {6}

        # The conf file says K = 4 now: every user is re-scored, though no file landed.
        conf["INTERESTLAKE__RECOMMEND__K"] = "4"
        wait_until(lambda: {len(rows) for rows in lists().values()} == {4}, "re-scoring with K = 4")
        assert stream.batches == 1

        # A catalog file: a new item; every user's list is written again by that batch.
        item = {"item_id": "i-stream", "title": "Walnut practice pad", "category": "Drums", "price": 25.0,
                "updated_at": "2026-11-02T00:20:00Z"}
        hidden = root / "landing" / "items" / ".items-new.tmp"
        hidden.write_text(json.dumps(item) + "\n")
        hidden.rename(root / "landing" / "items" / "items-new.jsonl")
        wait_until(lambda: stream.batches >= 2, "catalog batch")
        assert "i-stream" in {r[C.COL_ITEM_ID] for r in lake.read_rows(C.ITEMS, columns=[C.COL_ITEM_ID])}
        runs = {r[C.COL_RUN_ID] for rows in lists().values() for r in rows}
        assert len(runs) == 1 and runs.pop().startswith("stream__"), "one batch re-scored every user"
        # After two batches the bookkeeping tables are compacted between batches: one file each.
        from deltalake import DeltaTable

        wait_until(lambda: len(DeltaTable(str(root / C.PIPELINE_RUNS)).file_uris()) == 1, "compaction")
        assert len(DeltaTable(str(root / C.LANDING_FILES)).file_uris()) == 1

        # Files landing faster than batches end leave the stream no idle moment: a writer that
        # asks for a turn (the maintenance DAG) still gets one, after a batch, and the stream
        # goes on once it is done.
        from interestlake.lake.lock import writer_lock

        flowing = threading.Event()
        flowing.set()

        def land_steadily() -> None:
            n = 0
            while flowing.is_set():
                event = {"event_id": f"flow-{n}", "user_id": "u-flow", "item_id": "i-stream", "event_type": "view",
                         "ts": f"2026-11-03T00:{n // 60 % 60:02d}:{n % 60:02d}Z"}
                hidden = root / "landing" / "events" / f".flow-{n}.tmp"
                hidden.write_text(json.dumps(event) + "\n")
                hidden.rename(root / "landing" / "events" / f"flow-{n:04d}.jsonl")
                n += 1
                time.sleep(0.3)

        lander = threading.Thread(target=land_steadily, daemon=True)
        lander.start()
        try:
            flowing_from = stream.batches
            wait_until(lambda: stream.batches >= flowing_from + 2, "batches of the steady flow")
            with writer_lock(str(root), "maintain-test", wait_seconds=120):
                during = stream.batches
                time.sleep(3)
                assert stream.batches == during, "the stream wrote while another writer had the lake"
        finally:
            flowing.clear()
            lander.join()
        wait_until(lambda: stream.batches > during, "the stream taking the lake back")
    finally:
        stream.stop_asked.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
