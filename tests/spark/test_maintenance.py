"""Table maintenance: compaction and vacuum change no row and never break the next incremental run;
retention deletes only old quarantine and run-log rows."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable

from interestlake import constants as C
from interestlake.datasets.sample import generate_sample
from interestlake.lake.schemas import TABLES
from interestlake.pipeline.maintain import apply_retention, maintain, vacuum, versions_in_use

from tests.spark.test_incremental import assert_same_as_full_recompute, run

pytestmark = [pytest.mark.spark, pytest.mark.slow]
NOW = datetime(2026, 11, 5, 3, 0, tzinfo=timezone.utc)


def contents(lake):
    return {name: sorted(map(repr, lake.read(name).collect())) for name in TABLES}


def land_events(landing: Path, name: str, events: list[dict]) -> None:
    (landing / "events" / name).write_text("".join(json.dumps(e) + "\n" for e in events))


def test_compaction_and_vacuum_keep_rows_and_the_next_incremental_run(pipeline, lake, settings):
    landing = Path(settings.lake.landing_uri)
    generate_sample(landing, seed=5, n_users=8, n_items=10, days=20)
    pipeline.refresh(run(1))
    # Ingested but not yet processed by the later stages: their next run diffs the
    # events table from the version the first refresh read.
    land_events(landing, "events-b.jsonl", [
        {"event_id": "b-1", "user_id": "u-0002", "item_id": "i-0003", "event_type": "cart", "ts": "2026-11-03T10:00:00Z"},
        {"event_id": "b-2", "user_id": "u-0004", "item_id": "i-0005", "event_type": "view", "ts": "2026-11-03T11:00:00Z"},
    ])
    pipeline.run_stage("ingest", run(2))
    before = contents(lake)
    files_before = {name: len(DeltaTable(lake.uri(name)).file_uris()) for name in TABLES}

    reports = maintain(lake, settings, NOW, steps=("compact", "checkpoint"))

    assert contents(lake) == before
    compacted = {r.table: r.counts for r in reports if r.step == "compact"}
    for name in TABLES:
        assert len(DeltaTable(lake.uri(name)).file_uris()) == files_before[name] - compacted[name]["files_removed"] + compacted[name]["files_added"]
    assert compacted[C.EVENTS]["files_removed"] >= 2 and len(DeltaTable(lake.uri(C.EVENTS)).file_uris()) == 1
    assert all((Path(lake.uri(name)) / "_delta_log" / "_last_checkpoint").exists() for name in TABLES)

    # The floor of the settings is one hour; with no floor at all, vacuum still keeps
    # every file of the versions the stages' next runs read from (above all the events
    # file of version 1, which compaction just replaced: the next run diffs against it).
    in_use = versions_in_use(lake)
    assert 1 in in_use[C.EVENTS] and in_use[C.USER_INTERESTS] == {1}
    deleted = sum(vacuum(lake, name, 0, in_use.get(name, set())).counts["files_deleted"] for name in TABLES)
    assert deleted > 0
    assert contents(lake) == before
    for name, versions in in_use.items():
        for version in versions:
            assert all(Path(uri.removeprefix("file://")).exists() for uri in DeltaTable(lake.uri(name), version=version).file_uris())

    land_events(landing, "events-c.jsonl", [
        {"event_id": "c-1", "user_id": "u-0002", "item_id": "i-0007", "event_type": "purchase", "ts": "2026-11-04T10:00:00Z"},
        {"event_id": "c-2", "user_id": "u-0006", "item_id": "i-0001", "event_type": "click", "ts": "2026-11-04T11:00:00Z"},
    ])
    reports = pipeline.refresh(run(3))
    by_stage = {r.stage: r for r in reports}
    # The users of both batches, and no one else: the compacted copies are not new rows,
    # and a compacted catalog is not a changed catalog (no re-score of everyone).
    assert by_stage["interests"].counts["users_changed"] == 3
    assert by_stage["recommend"].counts["users_scored"] == 3
    assert_same_as_full_recompute(pipeline, lake, 4)


def test_retention_deletes_old_rows_and_keeps_each_stages_last_success(lake, settings):
    policy = settings.maintenance
    old_q = NOW - timedelta(days=policy.quarantine_retention_days, minutes=1)
    new_q = NOW - timedelta(days=policy.quarantine_retention_days - 1)
    lake.upsert_rows(C.QUARANTINE, [
        {"source": "f1", C.COL_RUN_ID: "r-old", "row_no": 1, "kind": "events", "reason": "invalid_json", "quarantined_at": old_q},
        {"source": "f2", C.COL_RUN_ID: "r-new", "row_no": 1, "kind": "events", "reason": "invalid_json", "quarantined_at": new_q},
    ])
    old_r = NOW - timedelta(days=policy.pipeline_runs_retention_days, hours=1)
    new_r = NOW - timedelta(days=1)

    def stage_run(run_id, stage, status, finished, params="p1"):
        return {C.COL_RUN_ID: run_id, "stage": stage, "logical_date": finished, "status": status, "params": params,
                "started_at": finished, "finished_at": finished, "read_versions": {C.EVENTS: 1}}

    lake.upsert_rows(C.PIPELINE_RUNS, [
        stage_run("old-1", "encode", "succeeded", old_r - timedelta(hours=1)),
        # Old, but the last success of encode under params p1: encode continues from it.
        stage_run("old-2", "encode", "succeeded", old_r),
        stage_run("old-3", "encode", "failed", old_r),
        stage_run("old-4", "ingest", "succeeded", old_r),
        stage_run("new-1", "ingest", "succeeded", new_r),
    ])

    old_f = NOW - timedelta(days=policy.landing_files_retention_days, hours=1)
    new_f = NOW - timedelta(days=1)

    def landed(source, content_hash, status, recorded):
        return {"source": source, "content_hash": content_hash, "kind": "events", "status": status,
                "run_id": "r", "recorded_at": recorded}

    lake.upsert_rows(C.LANDING_FILES, [
        landed("old-ingested", "h1", "ingested", old_f),
        landed("new-ingested", "h2", "ingested", new_f),
        # Held long ago and never fixed: ingest still compares the file with this row.
        landed("still-held", "h3", "held", old_f),
        # Held, then ingested once fixed: the old held row goes, the newer record stays.
        landed("fixed", "h4", "held", old_f),
        landed("fixed", "h5", "ingested", new_f),
    ])

    reports = apply_retention(lake, settings, NOW)

    assert {r.table: r.counts["rows_deleted"] for r in reports} == {C.QUARANTINE: 1, C.PIPELINE_RUNS: 3, C.LANDING_FILES: 2}
    kept = sorted((r["source"], r["content_hash"]) for r in lake.read_rows(C.LANDING_FILES))
    assert kept == [("fixed", "h5"), ("new-ingested", "h2"), ("still-held", "h3")]
    assert [r.source for r in lake.read(C.QUARANTINE).collect()] == ["f2"]
    assert sorted(r.run_id for r in lake.read(C.PIPELINE_RUNS).collect()) == ["new-1", "old-2"]
    # A retried run (same logical date) finds nothing more to delete.
    assert {r.counts["rows_deleted"] for r in apply_retention(lake, settings, NOW)} == {0}


def test_a_run_whose_last_input_versions_left_the_delta_log_recomputes_in_full(pipeline, lake, settings):
    landing = Path(settings.lake.landing_uri)
    generate_sample(landing, seed=6, n_users=8, n_items=10, days=20)
    pipeline.refresh(run(1))
    read_before = DeltaTable(lake.uri(C.EVENTS)).version()
    # A pipeline paused for longer than the log retention: the events versions its stages
    # last read are cleaned out of the log (retention 0 here, 30 days by default).
    events = DeltaTable(lake.uri(C.EVENTS))
    events.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
    land_events(landing, "events-late.jsonl", [
        {"event_id": "late-1", "user_id": "u-0003", "item_id": "i-0002", "event_type": "purchase", "ts": "2026-11-04T10:00:00Z"},
        {"event_id": "late-2", "user_id": "u-0005", "item_id": "i-0004", "event_type": "search", "text": "soft pick",
         "ts": "2026-11-04T11:00:00Z"},
    ])
    pipeline.run_stage("ingest", run(2))
    events = DeltaTable(lake.uri(C.EVENTS))
    events.create_checkpoint()
    events.cleanup_metadata()
    assert not lake.has_version(C.EVENTS, read_before) and lake.has_version(C.EVENTS, events.version())
    # The daily maintenance of a paused pipeline still runs.
    assert maintain(lake, settings, NOW, steps=("vacuum",))

    reports = {r.stage: r for r in pipeline.refresh(run(3))}

    assert "looked at every text" in reports["encode"].note
    assert reports["encode"].counts["texts_to_encode"] == 1  # the new query; the rest is cached
    assert "recomputed in full" in reports["interests"].note
    assert reports["interests"].counts["users_changed"] == lake.read(C.USER_INTERESTS).count()
    runs = lake.read_rows(C.PIPELINE_RUNS, filters=[(C.COL_RUN_ID, "=", run(3).run_id)])
    assert {r["stage"]: r["status"] for r in runs} == {s: "succeeded" for s in ("ingest", "encode", "interests", "recommend")}
    assert "recomputed in full" in {r["stage"]: r["note"] for r in runs}["interests"]
    # Recorded once, as one run of the stage: no interim "failed" row for the retried read.
    recorded = [json.loads(c["userMetadata"]) for c in DeltaTable(lake.uri(C.PIPELINE_RUNS)).history() if c.get("userMetadata")]
    assert sum(m.get("stage") == "interests" and m.get("run_id") == run(3).run_id for m in recorded) == 1
    assert_same_as_full_recompute(pipeline, lake, 4)
