"""Ingest on dirty landing files: every valid row once, every bad row quarantined, bad files retried."""

import gzip
import json
import logging
import os
from datetime import datetime, timedelta, timezone

import pytest

from interestlake import constants as C
from interestlake.pipeline.run import RunContext

from tests.spark.test_stages import ITEMS, event, write_jsonl

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SECRET_REVIEW = "my very private review text about the kettle"
SECRET_QUERY = "my very private search about a divorce lawyer"


def run(n):
    return RunContext.create(f"bad-input-{n}", f"2026-11-10T00:{n:02d}:00Z")


@pytest.fixture
def landing(settings):
    from pathlib import Path

    return Path(settings.lake.landing_uri)


def search(eid, user, text, **extra):
    return {**event(eid, user, None, kind="search"), "text": text, **extra}


def quarantined(lake):
    return sorted((r.kind, r.source.rsplit("/", 1)[1], r.row_no, r.reason) for r in lake.read(C.QUARANTINE).collect())


@pytest.mark.parametrize("on_driver", [True, False], ids=["small-batch-on-driver", "spark-jobs"])
def test_every_case_lands_once_or_is_quarantined_with_its_reason(pipeline, lake, landing, caplog, monkeypatch, on_driver):
    from interestlake.settings import SmallBatchSettings

    import interestlake.pipeline.ingest as ingest_module

    # Both ways of ingesting a batch must land and quarantine exactly the same rows.
    pipeline.settings = pipeline.settings.model_copy(update={"small_batch": SmallBatchSettings(enabled=on_driver)})
    parsed_by_spark = []
    spark_parse = ingest_module.parse_landing

    def recording_parse(spark, kind, files, pseudonym=None):
        parsed_by_spark.append(kind)
        return spark_parse(spark, kind, files, pseudonym)

    monkeypatch.setattr(ingest_module, "parse_landing", recording_parse)
    future = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
    write_jsonl(landing / "items" / "catalog.jsonl", [
        *ITEMS,
        {"item_id": "big", "title": "A book with a huge blurb", "description": "word " * 200_000},  # 1 MB
        {"item_id": "nul", "title": "Mug", "price": -1},
    ])
    lines = [
        event("e1", "alice", "g1"),                                         # 1 valid
        '{"event_id": "e-json", "user_id": "alice"',                        # 2 invalid_json
        event("e-type", "alice", ["g1"]),                                   # 3 invalid_type
        {k: v for k, v in event("e-miss", "alice", "g1").items() if k != "user_id"},  # 4 missing_field
        event("e-empty", "   ", "g1"),                                      # 5 empty_id
        event("x" * 300, "alice", "g1"),                                    # 6 id_too_long
        event("e-kind", "alice", "g1", kind="teleport"),                    # 7 unknown_event_type
        event("e-r7", "alice", "g1", kind="rate", rating=7),                # 8 invalid_rating
        event("e-rtxt", "alice", "g1", kind="rate", rating="great"),        # 9 invalid_rating
        {**event("e-ts", "alice", "g1"), "ts": "yesterday"},                # 10 invalid_timestamp
        {**event("e-old", "alice", "g1"), "ts": "1990-01-01T00:00:00Z"},    # 11 invalid_timestamp
        {**event("e-future", "alice", "g1"), "ts": future},                 # 12 invalid_timestamp
        event("e1", "alice", "c1"),                                         # 13 duplicate in the file
        None,                                                               # 14 non-UTF-8 (written below)
        event("e-nul", "bob\u0000", "g1"),                                  # 15 invalid_id
        search("e-ctl", "bob", "pour\u0007 over kettle\u0000"),              # 16 control characters removed
        search("e-long", "bob", "k" * 20_000),                              # 17 truncated, flagged
        search("e-blank", "bob", "   "),                                    # 18 missing_field
        search("e-html", "bob", "<script>alert('x')</script><b>kettle</b>"),  # 19 kept as data
        search("e-intl", "bob", "咖啡 ☕ مرحبا بالعالم 🎸"),                     # 20 kept intact
        event("e-ghost", "bob", "not-in-catalog"),                          # 21 unknown item: kept, counted
        search("e-secret", "carol", SECRET_QUERY),                          # 22
    ]
    path = landing / "events" / "mixed.jsonl"
    write_jsonl(path, ["" if row is None else row for row in lines])
    data = path.read_bytes().split(b"\n")
    data[13] = b'{"event_id": "e-bytes", "user_id": "\xff\xfe"}'
    path.write_bytes(b"\n".join(data))
    write_jsonl(landing / "events" / "second.jsonl", [event("e1", "bob", "g2"), event("e2", "bob", "g2")])
    write_jsonl(landing / "reviews" / "reviews.jsonl", [
        {"review_id": "r1", "user_id": "carol", "item_id": "c3", "rating": 5, "text": SECRET_REVIEW, "ts": 1790000000},
        {"review_id": "r2", "user_id": "carol", "item_id": "c2", "rating": 4, "text": "", "ts": 1790000000},
        {"review_id": "r3", "user_id": "carol", "item_id": "c2", "rating": 0, "text": "zero", "ts": 1790000000},
        {"review_id": "r4", "user_id": "carol", "item_id": "c2", "rating": "five", "text": "?", "ts": 1790000000},
        {"review_id": "r1", "user_id": "carol", "item_id": "c1", "rating": 1, "text": "again", "ts": 1790000000},
    ])
    # Whole files that cannot land: each one quarantine row, the rest of the run goes on.
    (landing / "events" / "notes.xml").write_text("<events/>")
    (landing / "events" / "blank.jsonl").write_bytes(b"\n\n")
    # 0 bytes (created, not yet written): Spark drops it from its batch; ingest holds it (below).
    (landing / "events" / "empty.jsonl").write_bytes(b"")
    (landing / "events" / "corrupt.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 2)
    (landing / "events" / "cut.jsonl.gz").write_bytes(gzip.compress((json.dumps(event("e-cut", "dan", "g1")) + "\n").encode() * 40)[:-9])
    (landing / "events" / "partial.jsonl").write_text(json.dumps(event("e-part", "dan", "g1")) + '\n{"event_id": "e-p2", "us')

    caplog.set_level(logging.INFO)
    report = pipeline.run_stage("ingest", run(1))
    # The catalog always lands through Spark; events and reviews only without the small-batch path.
    assert sorted(set(parsed_by_spark)) == (["items"] if on_driver else ["events", "items", "reviews"])

    events = {r.event_id: r for r in lake.read(C.EVENTS).collect()}
    assert sorted(events) == sorted(["e1", "e2", "e-ctl", "e-long", "e-html", "e-intl", "e-ghost", "e-secret"])
    assert events["e1"].item_id == "g1"                          # the first occurrence wins
    assert events["e-ctl"].text == "pour over kettle"
    assert len(events["e-long"].text) == 16_384 and events["e-long"].truncated is True
    assert events["e-html"].text == "<script>alert('x')</script><b>kettle</b>" and events["e-html"].truncated is False
    assert events["e-intl"].text == "咖啡 ☕ مرحبا بالعالم 🎸"
    reviews = {r.review_id: r for r in lake.read(C.REVIEWS).collect()}
    assert sorted(reviews) == ["r1", "r2"] and reviews["r2"].text is None and reviews["r1"].item_id == "c3"
    items = {r.item_id: r for r in lake.read(C.ITEMS).collect()}
    assert sorted(items) == sorted([i["item_id"] for i in ITEMS] + ["big"])
    assert items["big"].truncated is True and len(items["big"].description) == 16_384

    assert quarantined(lake) == sorted([
        ("events", "mixed.jsonl", 2, "invalid_json"),
        ("events", "mixed.jsonl", 3, "invalid_type"),
        ("events", "mixed.jsonl", 4, "missing_field"),
        ("events", "mixed.jsonl", 5, "empty_id"),
        ("events", "mixed.jsonl", 6, "id_too_long"),
        ("events", "mixed.jsonl", 7, "unknown_event_type"),
        ("events", "mixed.jsonl", 8, "invalid_rating"),
        ("events", "mixed.jsonl", 9, "invalid_rating"),
        ("events", "mixed.jsonl", 10, "invalid_timestamp"),
        ("events", "mixed.jsonl", 11, "invalid_timestamp"),
        ("events", "mixed.jsonl", 12, "invalid_timestamp"),
        ("events", "mixed.jsonl", 14, "invalid_encoding"),
        ("events", "mixed.jsonl", 15, "invalid_id"),
        ("events", "mixed.jsonl", 18, "missing_field"),
        ("events", "notes.xml", 0, "unknown_format"),
        ("events", "blank.jsonl", 0, "empty_file"),
        ("events", "empty.jsonl", 0, "empty_file"),
        ("events", "corrupt.jsonl.gz", 0, "unreadable_file"),
        ("events", "cut.jsonl.gz", 0, "truncated_file"),
        ("events", "partial.jsonl", 0, "truncated_file"),
        ("items", "catalog.jsonl", 8, "invalid_price"),
        ("reviews", "reviews.jsonl", 3, "invalid_rating"),
        ("reviews", "reviews.jsonl", 4, "invalid_rating"),
    ])
    assert {r.run_id for r in lake.read(C.QUARANTINE).collect()} == {"bad-input-1"}

    # The counts printed are the tables' counts.
    counts = report.counts
    for kind in C.LANDING_KINDS:
        written = lake.read(kind).count()
        assert counts[f"{kind}_accepted"] - counts.get(f"{kind}_duplicates", 0) == written, kind
        rejected = sum(n for key, n in counts.items() if key.startswith(f"{kind}_rejected_"))
        assert rejected == lake.read(C.QUARANTINE).filter(f"kind = '{kind}'").count(), kind
    assert counts["events_duplicates"] == 2 and counts["reviews_duplicates"] == 1
    assert counts["events_rejected_invalid_timestamp"] == 3 and counts["events_rejected_truncated_file"] == 2
    assert counts["events_unknown_item"] == 1 and counts["files_held"] == 6
    assert counts["events_files"] == 8
    summary = report.summary()
    assert "events_rejected_invalid_json=1" in summary and "events_unknown_item=1" in summary

    # Review and query texts never reach the logs, the report or the quarantine details.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    details = " ".join(r.detail or "" for r in lake.read(C.QUARANTINE).collect())
    for secret in (SECRET_REVIEW, SECRET_QUERY, "kettle"):
        assert secret not in logged and secret not in summary and secret not in details

    # Across runs: a key already in the table is a duplicate, not an error. The empty file,
    # written since, lands now.
    write_jsonl(landing / "events" / "third.jsonl", [event("e1", "erin", "c1"), event("e3", "erin", "c1")])
    write_jsonl(landing / "events" / "empty.jsonl", [event("e4", "erin", "c2")])
    again = pipeline.run_stage("ingest", run(2))
    assert again.counts["events_duplicates"] == 1 and again.counts["events_accepted"] == 3
    assert again.counts["files_retried"] == 1
    assert lake.read(C.EVENTS).filter("event_id = 'e1'").count() == 1
    assert lake.read(C.EVENTS).count() == len(events) + 2


def test_broken_files_are_retried_only_when_they_change_and_land_once(pipeline, lake, landing, monkeypatch):
    import interestlake.pipeline.ingest as ingest_module

    good = landing / "events" / "good.jsonl"
    partial = landing / "events" / "partial.jsonl"
    corrupt = landing / "events" / "corrupt.jsonl.gz"
    write_jsonl(good, [event("e1", "alice", "g1")])
    complete = [json.dumps(event(f"e{i}", "bob", "g2")) for i in (2, 3)] + ["{oops"]
    partial.write_text(complete[0] + "\n" + complete[1][:20])
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 20)
    first = pipeline.run_stage("ingest", run(1))
    assert [r.event_id for r in lake.read(C.EVENTS).collect()] == ["e1"]
    assert first.counts["files_held"] == 2
    assert quarantined(lake) == [("events", "corrupt.jsonl.gz", 0, "unreadable_file"),
                                 ("events", "partial.jsonl", 0, "truncated_file")]
    tables = (C.EVENTS, C.QUARANTINE, C.LANDING_FILES)

    # Unchanged: not even read again.
    before = lake.versions(tables)
    quiet = pipeline.run_stage("ingest", run(2))
    assert lake.versions(tables) == before and "files_retried" not in quiet.counts

    # Touched but the same bytes: its new time is recorded, nothing is quarantined twice.
    os.utime(corrupt, (corrupt.stat().st_atime, corrupt.stat().st_mtime + 60))
    touched = pipeline.run_stage("ingest", run(3))
    assert "files_retried" not in touched.counts
    assert lake.versions([C.EVENTS, C.QUARANTINE]) == {t: before[t] for t in (C.EVENTS, C.QUARANTINE)}
    settled = lake.versions(tables)
    pipeline.run_stage("ingest", run(4))
    assert lake.versions(tables) == settled

    # The writer finishes the file; this run dies after its commits, before recording the file.
    partial.write_text("\n".join(complete) + "\n")
    real_record = ingest_module._record_files

    def die(lake_, rows, run_):
        if rows:
            raise RuntimeError("killed before recording the files")

    monkeypatch.setattr(ingest_module, "_record_files", die)
    with pytest.raises(RuntimeError, match="killed"):
        pipeline.run_stage("ingest", run(5))
    monkeypatch.setattr(ingest_module, "_record_files", real_record)
    retried = pipeline.run_stage("ingest", run(6))
    assert retried.counts["files_retried"] == 1
    assert sorted(r.event_id for r in lake.read(C.EVENTS).collect()) == ["e1", "e2", "e3"]
    assert quarantined(lake) == [("events", "corrupt.jsonl.gz", 0, "unreadable_file"),
                                 ("events", "partial.jsonl", 0, "truncated_file"),
                                 ("events", "partial.jsonl", 3, "invalid_json")]
    held = {r["source"].rsplit("/", 1)[1] for r in ingest_module.held_files(lake)}
    assert held == {"corrupt.jsonl.gz"}
    # Done: the next run reads nothing again.
    settled = lake.versions(tables)
    pipeline.run_stage("ingest", run(7))
    assert lake.versions(tables) == settled


def test_pseudonymised_ids_are_stable_across_runs_and_depend_on_the_key(spark, tmp_path, monkeypatch):
    from pathlib import Path

    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.refresh import Pipeline
    from interestlake.privacy import Pseudonymizer

    from tests.conftest import make_settings

    monkeypatch.setenv("INTERESTLAKE_PSEUDONYM_KEY", "a-test-key-of-32-bytes-0123456789")
    settings = make_settings(tmp_path / "lake", {"INTERESTLAKE__PRIVACY__PSEUDONYMIZE_USER_IDS": "true"})
    lake = open_lake(spark, settings.lake)
    lake.ensure_tables()
    pipeline = Pipeline(spark, lake, settings)
    landing = Path(settings.lake.landing_uri)
    write_jsonl(landing / "events" / "1.jsonl", [event("e1", "alice", "g1"), event("e2", "bob", "g1")])
    pipeline.run_stage("ingest", run(1))
    write_jsonl(landing / "events" / "2.jsonl", [event("e3", "alice", "g2"), event("e4", "alice", "g2", kind="nope")])
    pipeline.run_stage("ingest", run(2))
    users = {r.event_id: r.user_id for r in lake.read(C.EVENTS).collect()}
    assert users["e1"] == users["e3"] != users["e2"]
    assert users["e1"] == Pseudonymizer(b"a-test-key-of-32-bytes-0123456789")("alice")
    assert users["e1"] != Pseudonymizer(b"another-key-of-32-bytes-012345678")("alice")
    [raw] = [r.raw for r in lake.read(C.QUARANTINE).collect()]
    assert "alice" not in raw and users["e1"] in raw
    assert "alice" not in json.dumps([r.asDict() for r in lake.read(C.EVENTS).collect()], default=str)
    # forget takes the id the platform knows and finds its pseudonym with the key.
    from interestlake.pipeline.forget import forget

    forget(spark, lake, settings, "alice", run(3))
    assert sorted(r.event_id for r in lake.read(C.EVENTS).collect()) == ["e2"]
    assert lake.read(C.QUARANTINE).count() == 0


def test_cli_exit_codes_bad_rows_zero_unreachable_lake_one(spark, tmp_path, capsys):
    from interestlake.cli import main

    from tests.conftest import make_settings

    root = tmp_path / "lake"
    landing = root / "landing"
    write_jsonl(landing / "events" / "e.jsonl", [event("e1", "alice", "g1"), "{bad"])
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"extends: {make_settings(root).source}\n")
    env = {"INTERESTLAKE__LAKE__ROOT": str(root), "INTERESTLAKE__SPARK__MASTER": "local[2]"}
    os.environ.update(env)
    try:
        assert main(["validate", str(landing)]) == 0
        out = capsys.readouterr().out
        assert "accepted 1" in out and "invalid_json 1" in out and not (root / "events").exists()
        assert main(["ingest", "--conf", str(conf), "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["counts"]["events_accepted"] == 1 and printed["counts"]["events_rejected_invalid_json"] == 1
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        os.environ["INTERESTLAKE__LAKE__ROOT"] = str(blocker / "lake")
        assert main(["ingest", "--conf", str(conf)]) == 1
        err = capsys.readouterr().err
        assert "cannot be used" in err and "Traceback" not in err
    finally:
        for name in env:
            os.environ.pop(name, None)


@pytest.mark.parametrize("on_driver", [True, False], ids=["small-batch-on-driver", "spark-jobs"])
def test_mixed_bad_and_drifting_input_lands_every_valid_row_exactly_once(pipeline, lake, landing, on_driver):
    from interestlake.settings import SmallBatchSettings

    from tests.mixed_bad_input import write_mixed_landing

    pipeline.settings = pipeline.settings.model_copy(update={"small_batch": SmallBatchSettings(enabled=on_driver)})
    expected = write_mixed_landing(landing)
    report = pipeline.run_stage("ingest", run(1))
    keys = {C.EVENTS: C.COL_EVENT_ID, C.REVIEWS: C.COL_REVIEW_ID, C.ITEMS: C.COL_ITEM_ID}
    for kind, key in keys.items():
        landed = [row[key] for row in lake.read(kind).select(key).collect()]
        assert sorted(landed) == sorted(expected.keys[kind]), kind
        # The notes (unknown field names, decoded encodings) are counted per kind, names only.
        for note, rows in expected.notes[kind].items():
            assert report.counts[f"{kind}_{note}"] == rows, (kind, note)
        assert report.counts.get(f"{kind}_duplicates", 0) == expected.duplicates[kind], kind
    assert quarantined(lake) == expected.quarantined()
    texts = {r.event_id: r.text for r in lake.read(C.EVENTS).filter("text IS NOT NULL").collect()}
    assert texts == expected.texts
    assert "s-9" not in report.summary() and "events_unknown_field.session=1" in report.summary()
    # A second run finds nothing new: every valid row stays landed exactly once.
    before = {kind: lake.version(kind) for kind in (*keys, C.QUARANTINE)}
    pipeline.run_stage("ingest", run(2))
    assert {kind: lake.version(kind) for kind in (*keys, C.QUARANTINE)} == before
