"""Each stage on small hand-written landing files, where the right answer is known."""

import gzip
import json
import socket

import numpy as np
import pytest

from interestlake import constants as C
from interestlake.pipeline.run import RunContext

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ITEMS = [
    {"item_id": "g1", "title": "Fender Stratocaster Electric Guitar", "category": "guitars", "price": 699.0,
     "description": "Solid alder body with three single-coil pickups.", "updated_at": "2026-09-01T00:00:00Z"},
    {"item_id": "g2", "title": "Yamaha Acoustic Guitar", "category": "guitars", "price": 199.0,
     "description": "Spruce top, warm tone for beginners.", "updated_at": "2026-09-01T00:00:00Z"},
    {"item_id": "g3", "title": "Guitar Capo", "category": "guitars", "price": 12.0,
     "description": "Quick-release capo for six-string guitars.", "updated_at": "2026-09-01T00:00:00Z"},
    {"item_id": "c1", "title": "Espresso Coffee Beans 1kg", "category": "coffee", "price": 24.0,
     "description": "Dark roast whole beans for espresso.", "updated_at": "2026-09-01T00:00:00Z"},
    {"item_id": "c2", "title": "Burr Coffee Grinder", "category": "coffee", "price": 89.0,
     "description": "Conical burrs, 40 grind settings.", "updated_at": "2026-09-01T00:00:00Z"},
    {"item_id": "c3", "title": "Gooseneck Pour-Over Kettle", "category": "coffee", "price": 59.0,
     "description": "Precise pour for filter coffee.", "updated_at": "2026-09-01T00:00:00Z"},
]


def event(eid, user, item, kind="view", day=1, **extra):
    return {"event_id": eid, "user_id": user, "item_id": item, "event_type": kind,
            "ts": f"2026-10-{day:02d}T12:00:00Z", **extra}


def write_jsonl(path, rows, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode() + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)


def run(n=1):
    return RunContext.create(f"test-run-{n}", f"2026-11-01T00:{n:02d}:00Z")


@pytest.fixture
def landing(settings):
    from pathlib import Path

    return Path(settings.lake.landing_uri)


def versions(lake):
    return {t: lake.version(t) for t in (C.EVENTS, C.REVIEWS, C.ITEMS, C.QUARANTINE)}


def test_ingest_dedupes_quarantines_and_keeps_latest_items(pipeline, lake, landing):
    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    write_jsonl(landing / "items" / "b.jsonl", [{**ITEMS[0], "price": 649.0, "updated_at": "2026-10-01T00:00:00Z"},
                                               {**ITEMS[1], "price": 1.0, "updated_at": "2026-01-01T00:00:00Z"}])
    write_jsonl(landing / "events" / "1.jsonl.gz", [
        event("e1", "alice", "g1"),
        event("e2", "alice", "g2"),
        event("e1", "alice", "c1", day=5),          # duplicate id: the first occurrence wins
        event("e3", "bob", "c1", kind="teleport"),   # unknown event type
        "{broken json",
    ], gz=True)
    write_jsonl(landing / "events" / "2.jsonl", [event("e2", "alice", "c2")])  # duplicate across files
    write_jsonl(landing / "reviews" / "r.jsonl", [
        {"review_id": "r1", "user_id": "alice", "item_id": "g1", "rating": 5, "text": "Lovely guitar.", "ts": 1790000000},
        {"review_id": "r2", "user_id": "alice", "item_id": "g1", "rating": 9, "text": "??", "ts": 1790000000},
    ])
    report = pipeline.run_stage("ingest", run(1))

    events = {r.event_id: r for r in lake.read(C.EVENTS).collect()}
    assert set(events) == {"e1", "e2"}
    assert events["e1"].item_id == "g1" and events["e2"].item_id == "g2"
    assert report.counts["events_duplicates"] == 2
    assert all(r.run_id == "test-run-1" for r in events.values())

    items = {r.item_id: r for r in lake.read(C.ITEMS).collect()}
    assert len(items) == 6
    assert items["g1"].price == 649.0          # newer row wins
    assert items["g2"].price == 199.0          # older row loses

    quarantine = sorted((r.kind, r.reason, r.row_no, r.source.rsplit("/", 1)[1]) for r in lake.read(C.QUARANTINE).collect())
    assert quarantine == [
        ("events", "invalid_json", 5, "1.jsonl.gz"),
        ("events", "unknown_event_type", 4, "1.jsonl.gz"),
        ("reviews", "invalid_rating", 2, "r.jsonl"),
    ]
    assert report.counts["events_rejected_unknown_event_type"] == 1
    assert lake.read(C.REVIEWS).count() == 1

    # Nothing new: a second run commits nothing, quarantine included.
    before = versions(lake)
    again = pipeline.run_stage("ingest", run(2))
    assert versions(lake) == before
    assert not any(c.committed for c in again.commits)

    # One new event and one already-known id in a new file: only the new one lands.
    write_jsonl(landing / "events" / "3.jsonl", [event("e9", "bob", "c1"), event("e1", "bob", "c2")])
    pipeline.run_stage("ingest", run(3))
    assert sorted(r.event_id for r in lake.read(C.EVENTS).collect()) == ["e1", "e2", "e9"]


def test_ingest_batch_replayed_after_a_crash_commits_nothing_twice(pipeline, lake, landing, settings):
    from pathlib import Path

    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    write_jsonl(landing / "events" / "e.jsonl", [event("e1", "alice", "g1"), "{broken"])
    pipeline.run_stage("ingest", run(1))
    before = versions(lake)
    # A run that died after its Delta commits but before Spark recorded the
    # micro-batch as done: Spark replays the batch with the same files and id.
    commits = Path(settings.lake.root) / "_checkpoints" / "ingest" / "landing" / "commits"
    for marker in commits.glob("*0*"):
        marker.unlink()
    replay = pipeline.run_stage("ingest", run(2))
    assert replay.counts["items_files"] == 1 and replay.counts["events_files"] == 1
    assert not any(c.committed for c in replay.commits)
    assert {c.table for c in replay.commits if c.skipped == "already committed"} == {C.ITEMS, C.EVENTS, C.QUARANTINE}
    assert versions(lake) == before
    assert lake.read(C.EVENTS).count() == 1 and lake.read(C.QUARANTINE).count() == 1
    # A later file is a new batch and lands.
    write_jsonl(landing / "items" / "b.jsonl", [{**ITEMS[0], "price": 1.0, "updated_at": "2026-10-05T00:00:00Z"}])
    pipeline.run_stage("ingest", run(3))
    assert {r.item_id: r.price for r in lake.read(C.ITEMS).collect()}["g1"] == 1.0


def test_ingest_starts_again_after_a_run_killed_while_spark_wrote_its_first_offsets(pipeline, lake, landing, settings):
    from pathlib import Path

    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    write_jsonl(landing / "events" / "e.jsonl", [event("e1", "alice", "g1")])
    pipeline.run_stage("ingest", run(1))
    before = versions(lake)
    # What a run killed inside Spark's write of batch 0's offsets leaves (seen in the random-kill
    # fault test): the write's hidden temporary file (and its checksum), never renamed to
    # offsets/0, and no commit of the batch. Spark refused every later start ("offsets should
    # be empty on batch 0").
    checkpoint = Path(settings.lake.root) / "_checkpoints" / "ingest" / "landing"
    for done in (checkpoint / "commits").iterdir():
        done.unlink()
    unfinished = checkpoint / "offsets" / ".0.3f6c2a9e-0d4b-4c55-9a7e-5b1f2e8d7c10.tmp"
    (checkpoint / "offsets" / "0").rename(unfinished)
    (checkpoint / "offsets" / ".0.crc").rename(unfinished.parent / f".{unfinished.name}.crc")

    replay = pipeline.run_stage("ingest", run(2))
    assert sorted(p.name for p in (checkpoint / "offsets").iterdir()) == [".0.crc", "0"]
    # Batch 0 again, with the same files: its commits were made and are skipped.
    assert replay.counts["items_files"] == 1 and replay.counts["events_files"] == 1
    assert not any(c.committed for c in replay.commits)
    assert versions(lake) == before
    write_jsonl(landing / "events" / "f.jsonl", [event("e2", "bob", "c1")])
    pipeline.run_stage("ingest", run(3))
    assert sorted(r.event_id for r in lake.read(C.EVENTS).collect()) == ["e1", "e2"]


def test_encode_caches_by_text_hash_and_rewrites_only_changed_items(pipeline, lake, landing):
    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    same = "Great value, would buy again."
    write_jsonl(landing / "reviews" / "r.jsonl", [
        {"review_id": f"r{n}", "user_id": f"u{n}", "item_id": "g1", "rating": 5, "text": same, "ts": 1790000000}
        for n in range(3)
    ])
    write_jsonl(landing / "events" / "e.jsonl", [
        event("s1", "u1", None, kind="search", text="  espresso beans "),
        event("s2", "u2", None, kind="search", text="espresso beans"),
    ])
    pipeline.run_stage("ingest", run(1))
    first = pipeline.run_stage("encode", run(1))
    # 6 item texts + 1 distinct review text + 1 distinct (trimmed) query.
    assert first.counts["texts_to_encode"] == 8
    texts = lake.read(C.TEXT_EMBEDDINGS).collect()
    assert len(texts) == 8 and len({t.text_hash for t in texts}) == 8
    vectors = np.array([t.embedding for t in texts])
    assert vectors.shape == (8, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert lake.read(C.ITEM_EMBEDDINGS).count() == 6

    again = pipeline.run_stage("encode", run(2))
    assert again.counts["texts_to_encode"] == 0 and again.counts["item_vectors_written"] == 0
    assert not any(c.committed for c in again.commits)

    write_jsonl(landing / "items" / "b.jsonl", [{**ITEMS[3], "title": "Decaf Coffee Beans 1kg",
                                               "updated_at": "2026-10-10T00:00:00Z"}])
    pipeline.run_stage("ingest", run(3))
    changed = pipeline.run_stage("encode", run(3))
    assert changed.counts["texts_to_encode"] == 1 and changed.counts["item_vectors_written"] == 1
    item_vectors = {r.item_id: r for r in lake.read(C.ITEM_EMBEDDINGS).collect()}
    assert len(item_vectors) == 6 and item_vectors["c1"].run_id == "test-run-3"
    assert item_vectors["g1"].run_id == "test-run-1"


def test_small_batch_finds_the_same_new_texts_on_the_driver_as_spark(pipeline, lake, landing):
    from interestlake.pipeline.gather import ArrowReader, SparkReader
    from interestlake.pipeline.history import texts_to_encode

    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    write_jsonl(landing / "events" / "old.jsonl", [event("s0", "u1", None, kind="search", text="old query")])
    pipeline.run_stage("ingest", run(1))
    since = lake.versions([C.EVENTS, C.REVIEWS])
    write_jsonl(landing / "events" / "new.jsonl", [
        event("s1", "u1", None, kind="search", text="  espresso beans "),   # Spark's trim: spaces only
        event("s2", "u2", None, kind="search", text="espresso beans"),
        event("s3", "u2", None, kind="search", text="\tespresso beans\n"),  # tabs and newlines are kept
        event("s4", "u3", None, kind="search", text="   "),                  # blank: no text
        event("s5", "u3", "g1", kind="view", text="not a query"),            # only searches are queries
        event("s6", "u4", None, kind="search", text="咖啡 ☕"),
    ])
    write_jsonl(landing / "reviews" / "r.jsonl", [
        {"review_id": "r1", "user_id": "u1", "item_id": "g1", "rating": 5, "text": " Great value. ", "ts": 1790000000},
        {"review_id": "r2", "user_id": "u2", "item_id": "g1", "rating": 4, "text": "", "ts": 1790000000},
    ])
    pipeline.run_stage("ingest", run(2))
    now = lake.versions([C.EVENTS, C.REVIEWS, C.ITEMS])

    found = texts_to_encode(ArrowReader(lake), now, since, catalog=False)
    on_driver = dict(zip(found.column(C.COL_TEXT_HASH).to_pylist(), found.column(C.COL_TEXT).to_pylist()))
    by_spark = {r.text_hash: r.text for r in texts_to_encode(SparkReader(lake), now, since, catalog=False).collect()}
    assert on_driver == by_spark
    assert sorted(on_driver.values()) == sorted(["espresso beans", "\tespresso beans\n", "咖啡 ☕", "Great value."])


def test_encoder_never_touches_the_network(monkeypatch, settings):
    from interestlake.models.encoder import encode_texts, load_encoder, resolve_model_path

    def refuse(*args, **kwargs):
        raise OSError("network access attempted by the encoder")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    model = load_encoder(resolve_model_path(settings.encoder), device="cpu", threads=1)
    vectors = encode_texts(model, ["a warm acoustic guitar", "dark roast espresso beans"], batch_size=2)
    assert vectors.shape == (2, 384)
    guitar, coffee = encode_texts(model, ["electric guitar strings", "coffee grinder"], batch_size=2)
    assert vectors[0] @ guitar > vectors[0] @ coffee


def test_encoder_path_errors_are_clear(tmp_path, settings):
    from interestlake.models.encoder import EncoderError, resolve_model_path

    bad = settings.encoder.model_copy(update={"model_path": str(tmp_path), "allowed_roots": [str(tmp_path)]})
    with pytest.raises(EncoderError, match="not a sentence-transformers model folder"):
        resolve_model_path(bad)


def test_interests_and_recommend_follow_taste_and_exclude_purchases(pipeline, lake, landing, settings):
    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    write_jsonl(landing / "events" / "e.jsonl", [
        event("a1", "guitarist", "g1", day=1),
        event("a2", "guitarist", "g1", kind="purchase", day=2),
        event("a3", "guitarist", "g3", kind="view", day=3),
        event("b1", "barista", "c1", day=1),
        event("b2", "barista", "c2", kind="cart", day=2),
        event("b3", "barista", None, kind="search", day=3, text="pour over kettle"),
    ])
    write_jsonl(landing / "reviews" / "r.jsonl", [
        {"review_id": "r1", "user_id": "barista", "item_id": "c1", "rating": 5, "text": "Rich crema.", "ts": "2026-10-04"},
    ])
    for stage in ("ingest", "encode", "interests", "recommend"):
        pipeline.run_stage(stage, run(1))

    interests = {r.user_id: r for r in lake.read(C.USER_INTERESTS).collect()}
    assert set(interests) == {"guitarist", "barista"}
    assert interests["guitarist"].event_count == 3 and interests["barista"].review_count == 1
    items = {r.item_id: np.array(r.embedding) for r in lake.read(C.ITEM_EMBEDDINGS).collect()}
    guitars = np.mean([items[i] for i in ("g1", "g2", "g3")], axis=0)
    coffee = np.mean([items[i] for i in ("c1", "c2", "c3")], axis=0)
    for user, mine, other in (("guitarist", guitars, coffee), ("barista", coffee, guitars)):
        vector = np.array(interests[user].interest)
        assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)
        assert vector @ mine > vector @ other

    recs = {}
    for row in lake.read(C.RECOMMENDATIONS).collect():
        recs.setdefault(row.user_id, []).append(row)
    k = settings.recommend.k
    # 6 items: the guitarist bought g1, the barista reviewed c1: 5 eligible each (< K).
    for user, excluded in (("guitarist", "g1"), ("barista", "c1")):
        rows = sorted(recs[user], key=lambda r: r.rank)
        assert [r.rank for r in rows] == list(range(1, min(k, 5) + 1))
        assert excluded not in {r.item_id for r in rows}
        assert len({r.item_id for r in rows}) == len(rows)
        assert all(a.score >= b.score for a, b in zip(rows, rows[1:]))
        assert all(r.reason for r in rows)
    assert sorted(recs["guitarist"], key=lambda r: r.rank)[0].item_id in {"g2", "g3"}
    barista_top = sorted(recs["barista"], key=lambda r: r.rank)[0]
    assert barista_top.item_id in {"c2", "c3"}
    kettle = [r for r in recs["barista"] if r.item_id == "c3"]
    assert kettle and "pour over kettle" in kettle[0].reason


def test_small_batch_limit_counts_the_new_event_and_review_rows(pipeline, lake, landing, settings):
    from interestlake.pipeline.run import few_new_rows
    from interestlake.settings import SmallBatchSettings

    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    write_jsonl(landing / "events" / "old.jsonl", [event("o1", "u1", "g1")])
    pipeline.run_stage("ingest", run(1))
    since = lake.versions([C.EVENTS, C.REVIEWS])
    write_jsonl(landing / "events" / "new.jsonl", [event(f"n{n}", "u1", "g2") for n in range(4)])
    write_jsonl(landing / "reviews" / "r.jsonl", [
        {"review_id": "r1", "user_id": "u1", "item_id": "g1", "rating": 5, "text": "fine", "ts": 1790000000},
    ])
    pipeline.run_stage("ingest", run(2))
    now = lake.versions([C.EVENTS, C.REVIEWS])

    def limited(rows, enabled=True):
        return settings.model_copy(update={"small_batch": SmallBatchSettings(enabled=enabled, max_new_rows=rows)})

    assert few_new_rows(lake, limited(5), since, now)          # 4 events + 1 review
    assert not few_new_rows(lake, limited(4), since, now)
    assert not few_new_rows(lake, limited(5, enabled=False), since, now)
    assert not few_new_rows(lake, limited(5), {**since, C.REVIEWS: None}, now)  # no previous run: Spark


def test_one_decision_sends_each_stage_of_a_batch_to_the_driver_or_to_spark(pipeline, lake, landing, settings):
    from interestlake.pipeline.run import driver_path
    from interestlake.settings import SmallBatchSettings

    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    write_jsonl(landing / "events" / "old.jsonl", [event("o1", "u1", "g1")])
    pipeline.run_stage("ingest", run(1))
    tables = (C.EVENTS, C.REVIEWS, C.ITEMS, C.ITEM_EMBEDDINGS, C.TEXT_EMBEDDINGS, C.USER_INTERESTS)
    since = lake.versions(tables)
    write_jsonl(landing / "events" / "new.jsonl", [event(f"n{n}", "u1", "g2") for n in range(4)])
    write_jsonl(landing / "reviews" / "r.jsonl", [
        {"review_id": "r1", "user_id": "u1", "item_id": "g1", "rating": 5, "text": "fine", "ts": 1790000000},
    ])
    pipeline.run_stage("ingest", run(2))
    now = lake.versions(tables)
    small = settings.model_copy(update={"small_batch": SmallBatchSettings(max_new_rows=5, max_landing_mb=1.0)})
    negative = small.steer.model_copy(update={
        "enabled": True, "negative": small.steer.negative.model_copy(update={"enabled": True})})
    disliking = small.model_copy(update={"steer": negative})
    derived = ("encode", "interests", "recommend", "topics")

    def decide(stage, conf=small, **batch):
        return driver_path(stage, lake, conf, **batch)

    # ingest: the size of the micro-batch's event or review files; items always on Spark.
    assert decide("ingest", kind=C.EVENTS, landing_bytes=2**20) and decide("ingest", kind=C.REVIEWS)
    assert not decide("ingest", kind=C.EVENTS, landing_bytes=2**20 + 1)
    assert not decide("ingest", kind=C.ITEMS, landing_bytes=10)
    # The other stages: an incremental run with few new events and reviews (4 + 1 here).
    assert all(decide(stage, since=since, now=now) for stage in derived)
    assert not any(decide(stage, since=None, now=now) for stage in derived)  # first or full run
    fewer = small.model_copy(update={"small_batch": SmallBatchSettings(max_new_rows=4)})
    assert not any(decide(stage, fewer, since=since, now=now) for stage in derived)
    # Each stage's own reasons for Spark.
    assert [decide(s, since={**since, C.ITEMS: since[C.ITEMS] - 1}, now=now) for s in derived] == [False, True, True, True]
    moved = {**since, C.ITEM_EMBEDDINGS: now[C.ITEM_EMBEDDINGS] - 1}
    assert [decide(s, since=moved, now=now) for s in derived] == [True, False, True, True]
    assert [decide(s, disliking, since=since, now=now) for s in derived] == [True, False, False, True]
    # Off, or no settings at all: Spark everywhere.
    off = small.model_copy(update={"small_batch": SmallBatchSettings(enabled=False)})
    assert not any(decide(s, conf, kind=C.EVENTS, since=since, now=now) for s in ("ingest", *derived) for conf in (off, None))
    with pytest.raises(ValueError, match="unknown stage 'score'"):
        decide("score", since=since, now=now)
