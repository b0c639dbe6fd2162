"""interestlake forget: the user leaves every table, then every data file on disk."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.schemas import TABLES
from interestlake.pipeline.run import RunContext

from tests.spark.test_stages import ITEMS, event, write_jsonl

pytestmark = [pytest.mark.spark, pytest.mark.slow]

GONE, KEPT = "user-forget-me-7", "user-keep-1"
SHARED = "Great strings, bright tone."
ONLY_THEIRS = ["only the forgotten user wrote this review", "forgotten user's own search for a capo"]


def run(n):
    return RunContext.create(f"forget-{n}", f"2026-11-12T00:{n:02d}:00Z")


def mentions(value, needles) -> bool:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return any(needle in text for needle in needles)


def files_mentioning(paths, needles) -> list[str]:
    return [str(p) for p in paths if mentions(pq.read_table(str(p)).to_pylist(), needles)]


def test_forget_removes_the_user_from_every_table_and_file(spark, tmp_path, monkeypatch, capsys):
    from deltalake import DeltaTable

    from interestlake.cli import main
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.maintain import vacuum, versions_in_use
    from interestlake.pipeline.refresh import Pipeline
    from tests.conftest import make_settings

    # Plain ids: the hard case (pseudonymised ids are forgotten the same way, see test_ingest_bad_input).
    settings = make_settings(tmp_path / "lake")
    lake = open_lake(spark, settings.lake)
    lake.ensure_tables()
    pipeline = Pipeline(spark, lake, settings)
    landing = Path(settings.lake.landing_uri)
    big = {"item_id": "big", "title": "Encyclopedia of Guitars", "category": "books", "description": "chord " * 170_000}
    write_jsonl(landing / "items" / "a.jsonl", [*ITEMS, big])  # one item text of 1 MB
    write_jsonl(landing / "events" / "e.jsonl", [
        event("e1", GONE, "g1"), event("e2", GONE, "g3", kind="purchase"),
        {**event("e3", GONE, None, kind="search"), "text": ONLY_THEIRS[1]},
        event("e4", KEPT, "c1"), event("e5", KEPT, "c2", kind="cart"),
        event("e6", GONE, "g2", kind="teleport"),                      # quarantined
        f'{{"event_id": "e7", "user_id": "{GONE}", "item_id": "g1"',   # broken JSON: raw keeps the id
    ])
    write_jsonl(landing / "reviews" / "r.jsonl", [
        {"review_id": "r1", "user_id": GONE, "item_id": "g1", "rating": 5, "text": SHARED, "ts": 1790000000},
        {"review_id": "r2", "user_id": KEPT, "item_id": "c1", "rating": 4, "text": SHARED, "ts": 1790000000},
        {"review_id": "r3", "user_id": GONE, "item_id": "g2", "rating": 2, "text": ONLY_THEIRS[0], "ts": 1790000000},
    ])
    pipeline.refresh(run(1))
    needles = [GONE, *ONLY_THEIRS]
    their_recommendations = lake.read(C.RECOMMENDATIONS).filter(f"user_id = '{GONE}'").count()
    assert their_recommendations > 0
    assert lake.read(C.USER_INTERESTS).count() == 2
    assert lake.read(C.QUARANTINE).count() == 2
    assert lake.read(C.ITEMS).filter("item_id = 'big'").first().truncated is True
    texts_before = lake.read(C.TEXT_EMBEDDINGS).count()

    conf = tmp_path / "conf.yaml"
    conf.write_text(f"extends: {settings.source}\n")
    monkeypatch.setenv("INTERESTLAKE__LAKE__ROOT", settings.lake.root)
    monkeypatch.setenv("INTERESTLAKE__SPARK__MASTER", "local[2]")
    assert main(["forget", GONE, "--conf", str(conf), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not mentions(report, needles)
    counts = report["counts"]
    assert counts["events_deleted"] == 3 and counts["reviews_deleted"] == 2 and counts["quarantine_deleted"] == 2
    assert counts["user_interests_deleted"] == 1 and counts["recommendations_deleted"] == their_recommendations
    assert counts["text_embeddings_deleted"] == 2
    # The forget is audited in pipeline_runs like every write: its counts, never the user.
    [audit] = [r.asDict(recursive=True) for r in lake.read(C.PIPELINE_RUNS).filter("stage = 'forget'").collect()]
    assert audit["status"] == "succeeded" and audit["run_id"] == report["run_id"]
    assert audit["counts"]["events_deleted"] == 3 and audit["written_versions"][C.EVENTS] == lake.version(C.EVENTS)
    assert not mentions(audit, needles)

    # No table's current version holds the user, their pseudonym or a text only they wrote...
    for table in TABLES:
        assert not files_mentioning(DeltaTable(lake.uri(table)).file_uris(), needles), table
        assert not mentions([r.asDict(recursive=True) for r in lake.read(table).collect()], needles), table
    # ...and nothing else was lost: the other user, the shared text, the catalog.
    assert lake.read(C.EVENTS).count() == 2 and lake.read(C.REVIEWS).count() == 1
    assert lake.read(C.USER_INTERESTS).count() == 1 and lake.read(C.ITEMS).count() == len(ITEMS) + 1
    assert lake.read(C.TEXT_EMBEDDINGS).count() == texts_before - 2
    assert lake.read(C.TEXT_EMBEDDINGS).filter(F.col(C.COL_TEXT) == SHARED).count() == 1
    # The Delta logs (never vacuumed) hold no statistic or commit message naming them.
    for table in TABLES:
        for entry in (Path(lake.uri(table)) / "_delta_log").glob("*.json"):
            assert not any(needle in entry.read_text() for needle in needles), entry

    # The next refresh has nothing to redo and does not bring them back.
    before = {t: lake.version(t) for t in (C.USER_INTERESTS, C.RECOMMENDATIONS)}
    pipeline.refresh(run(2))
    assert {t: lake.version(t) for t in before} == before
    # Once the retention window has passed (0 hours here), vacuum deletes every file that held them.
    in_use = versions_in_use(lake)
    for table in TABLES:
        vacuum(lake, table, 0, in_use.get(table, set()))
    on_disk = [p for table in TABLES for p in Path(lake.uri(table)).rglob("*.parquet")]
    assert on_disk and not files_mentioning(on_disk, needles)
