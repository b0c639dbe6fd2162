"""Incremental refresh equals a full recompute, and touches only what changed."""

import json

import numpy as np
import pytest
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.datasets.sample import generate_sample
from interestlake.pipeline.run import RunContext

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def run(n):
    return RunContext.create(f"run-{n}", f"2026-11-05T00:{n:02d}:00Z")


def snapshot(lake):
    interests = {r.user_id: r for r in lake.read(C.USER_INTERESTS).collect()}
    recs = sorted((r.user_id, r.rank, r.item_id, r.reason) for r in lake.read(C.RECOMMENDATIONS).collect())
    topics = sorted((r.user_id, r.topic, round(r.weight, 9), tuple(r.phrases), r.mentions, r.last_seen)
                    for r in lake.read(C.USER_TOPICS).collect())
    return interests, (recs, topics)


def assert_same_as_full_recompute(pipeline, lake, n):
    incremental_interests, incremental_recs = snapshot(lake)
    pipeline.run_stage("interests", run(n), full=True)
    pipeline.run_stage("recommend", run(n), full=True)
    full_interests, full_recs = snapshot(lake)
    assert set(incremental_interests) == set(full_interests)
    worst = 0.0
    for user, row in full_interests.items():
        for column in ("long_term", "short_term", "interest"):
            diff = np.abs(np.array(row[column]) - np.array(incremental_interests[user][column])).max()
            worst = max(worst, float(diff))
        assert row.event_count == incremental_interests[user].event_count
        assert row.review_count == incremental_interests[user].review_count
        assert row.recent == incremental_interests[user].recent
    assert worst <= 1e-5
    assert incremental_recs == full_recs


@pytest.fixture
def landing(settings):
    from pathlib import Path

    return Path(settings.lake.landing_uri)


@pytest.mark.parametrize("on_driver", [True, False], ids=["small-batch-on-driver", "spark-jobs"])
def test_new_events_refresh_only_their_users_and_match_full_recompute(pipeline, lake, landing, on_driver):
    from interestlake.settings import SmallBatchSettings

    # Small batches are gathered on the driver; either way the tables must equal a full recompute.
    pipeline.settings = pipeline.settings.model_copy(update={"small_batch": SmallBatchSettings(enabled=on_driver)})
    generate_sample(landing, seed=3, n_users=20, n_items=24, days=20)
    pipeline.refresh(run(1))
    recs_before = {(r.user_id, r.rank): r for r in lake.read(C.RECOMMENDATIONS).collect()}

    items = [json.loads(line)["item_id"] for line in (landing / "items" / "items-0001.jsonl").read_text().splitlines()]
    new = [
        {"event_id": f"new-{n}", "user_id": user, "item_id": items[n % len(items)], "event_type": kind,
         "ts": f"2026-11-0{2 + n % 3}T10:00:00Z"}
        for n, (user, kind) in enumerate([("u-0003", "purchase"), ("u-0003", "view"), ("u-0007", "cart"),
                                          ("u-0007", "view"), ("newcomer", "view")])
    ] + [{"event_id": "new-q", "user_id": "u-0011", "item_id": None, "event_type": "search",
          "text": "quiet practice pad for drums", "ts": "2026-11-03T11:00:00Z"}]
    (landing / "events" / "events-9001.jsonl").write_text("\n".join(json.dumps(e) for e in new) + "\n")
    reviews = [
        {"review_id": "new-r1", "user_id": "u-0007", "item_id": items[3], "rating": 5,
         "text": "  Sturdy stand, holds my guitar well ", "ts": "2026-11-04T09:00:00Z"},
        {"review_id": "new-r2", "user_id": "u-0003", "item_id": items[4], "rating": 2, "text": "", "ts": "2026-11-04T09:30:00Z"},
    ]
    (landing / "reviews" / "reviews-9001.jsonl").write_text("\n".join(json.dumps(r) for r in reviews) + "\n")
    reports, jobs = {}, {}
    tracker = pipeline.spark.sparkContext
    for stage in ("ingest", "encode", "interests", "recommend"):
        tracker.setJobGroup(f"{stage}-{on_driver}", stage)
        reports[stage] = pipeline.run_stage(stage, run(2))
        jobs[stage] = len(tracker.statusTracker().getJobIdsForGroup(f"{stage}-{on_driver}"))
    # The path taken: a small batch's encode (its two texts encoded in this process), interests
    # and recommend stages start no Spark job at all.
    if on_driver:
        assert jobs["encode"] == 0 and jobs["interests"] == 0 and jobs["recommend"] == 0, jobs
    else:
        assert jobs["encode"] > 0 and jobs["interests"] > 0 and jobs["recommend"] > 0, jobs
    # Either way the stored vectors are the encoder's own.
    from interestlake.models.encoder import encode_texts, load_encoder, resolve_model_path

    texts = ["quiet practice pad for drums", "Sturdy stand, holds my guitar well"]
    stored = {r.text: r.embedding for r in lake.read(C.TEXT_EMBEDDINGS).filter(F.col(C.COL_TEXT).isin(texts)).collect()}
    encoder = pipeline.settings.encoder
    expected = encode_texts(load_encoder(resolve_model_path(encoder), "cpu", encoder.max_seq_length), texts, 8)
    assert np.allclose([stored[t] for t in texts], expected, atol=1e-5)

    assert reports["ingest"].counts["events_files"] == 1  # only the new files are read
    assert reports["ingest"].counts["reviews_files"] == 1
    assert reports["encode"].counts["texts_to_encode"] == 2  # only the new query and review text
    assert reports["interests"].counts["users_changed"] == 4
    assert reports["interests"].counts["users_rebuilt"] == 0
    assert reports["recommend"].counts["users_scored"] == 4
    assert reports["recommend"].counts["catalog_staged"] == 0  # same catalog: the matrix of run 1 is reused
    recs_after = {(r.user_id, r.rank): r for r in lake.read(C.RECOMMENDATIONS).collect()}
    changed = {"u-0003", "u-0007", "u-0011", "newcomer"}
    assert {u for (u, _), r in recs_after.items() if r.run_id == "run-2"} == changed
    assert all(recs_after[key].item_id == rec.item_id for key, rec in recs_before.items() if key[0] not in changed)
    purchased = items[0]
    assert purchased not in {r.item_id for (u, _), r in recs_after.items() if u == "u-0003"}
    assert_same_as_full_recompute(pipeline, lake, 3)


def test_catalog_change_rebuilds_affected_users_and_rescores_everyone(pipeline, lake, landing):
    generate_sample(landing, seed=4, n_users=15, n_items=20, days=20)
    pipeline.refresh(run(1))
    first_item = json.loads((landing / "items" / "items-0001.jsonl").read_text().splitlines()[0])
    changed = {**first_item, "title": "Completely Different Espresso Grinder", "updated_at": "2026-11-04T00:00:00Z"}
    (landing / "items" / "items-9001.jsonl").write_text(json.dumps(changed) + "\n")
    reports = {r.stage: r for r in pipeline.refresh(run(2))}
    touched = {r.user_id for r in lake.read(C.EVENTS).filter(f"item_id = '{first_item['item_id']}'").collect()}
    assert reports["encode"].counts["item_vectors_written"] == 1
    assert reports["interests"].counts["users_rebuilt"] == len(touched) > 0
    assert reports["recommend"].counts["users_scored"] == 15
    assert reports["recommend"].counts["catalog_staged"] == 1
    assert_same_as_full_recompute(pipeline, lake, 3)


def test_pipeline_runs_records_counts_and_versions(pipeline, lake, landing):
    generate_sample(landing, seed=5, n_users=8, n_items=10, days=10)
    pipeline.refresh(run(1))
    pipeline.refresh(run(1))  # the same run again: its row is replaced, not added
    rows = {r.stage: r for r in lake.read(C.PIPELINE_RUNS).collect()}
    assert set(rows) == {"ingest", "encode", "interests", "recommend"}
    assert lake.read(C.PIPELINE_RUNS).count() == 4
    assert all(r.status == "succeeded" and r.run_id == "run-1" for r in rows.values())
    assert rows["interests"].read_versions[C.EVENTS] == lake.version(C.EVENTS)
    assert rows["ingest"].counts["events_files"] == 0  # the second pass found nothing new


def test_a_batch_without_text_records_topic_progress_and_the_next_text_still_counts(pipeline, lake, landing):
    from deltalake import DeltaTable

    generate_sample(landing, seed=4, n_users=10, n_items=12, days=20)
    pipeline.refresh(run(1))
    topics_before = sorted(map(repr, lake.read(C.USER_TOPICS).collect()))
    items = [json.loads(line)["item_id"] for line in (landing / "items" / "items-0001.jsonl").read_text().splitlines()]

    def land(name, rows):
        (landing / "events" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    land("events-views.jsonl", [{"event_id": f"v-{n}", "user_id": "u-0002", "item_id": items[n], "event_type": "view",
                                 "ts": "2026-11-03T10:00:00Z"} for n in range(3)])
    reports = {r.stage: r for r in pipeline.refresh(run(2))}

    # No text: the topics commit carries no rows, only the events version it has read,
    # so the next run does not read these events again.
    assert reports["interests"].counts["topic_rows"] == 0
    last = lake.last_metadata(C.USER_TOPICS, stage="topics")
    assert last["inputs"]["tables"][C.EVENTS] == DeltaTable(lake.uri(C.EVENTS)).version()
    assert DeltaTable(lake.uri(C.USER_TOPICS)).history(1)[0]["operationParameters"]["mode"] == "Append"
    assert sorted(map(repr, lake.read(C.USER_TOPICS).collect())) == topics_before

    land("events-search.jsonl", [{"event_id": "s-1", "user_id": "u-0002", "item_id": None, "event_type": "search",
                                  "text": "walnut ukulele strings", "ts": "2026-11-03T11:00:00Z"}])
    reports = {r.stage: r for r in pipeline.refresh(run(3))}

    assert reports["interests"].counts["topic_rows"] > 0
    incremental = sorted((r.user_id, r.topic, round(r.weight, 6)) for r in lake.read(C.USER_TOPICS).collect())
    assert any(user == "u-0002" and "ukulele" in topic for user, topic, _ in incremental)
    pipeline.run_stage("interests", run(4), full=True)
    assert sorted((r.user_id, r.topic, round(r.weight, 6)) for r in lake.read(C.USER_TOPICS).collect()) == incremental


def test_a_long_term_model_rebuilds_changed_users_whole_and_matches_full_recompute(pipeline, lake, landing, tmp_path):
    """Under a model with a long-term part and a history term the user vector reads the whole history: a changed user is rebuilt."""
    from interestlake.pipeline.train import train_model

    generate_sample(landing, seed=3, n_users=20, n_items=24, days=20)
    for stage in ("ingest", "encode"):
        pipeline.run_stage(stage, run(1))
    model = pipeline.settings.model.model_copy(update={"dim": 8, "epochs": 2, "long_term": True})
    trained, _ = train_model(lake, pipeline.settings.model_copy(update={"model": model}))
    assert trained.model.whole_history
    # And a whole-history term (trained only where its validation weighs it): its running sum too.
    rng = np.random.default_rng(0)
    n_items = len(trained.model.item_ids)
    trained.model.arrays.update(history_in=rng.normal(size=(n_items, 3)).astype(np.float32),
                                history_out=rng.normal(size=(n_items, 3)).astype(np.float32))
    assert trained.model.history_rank == 3
    folder = trained.model.save(tmp_path / "model")
    pipeline.settings = pipeline.settings.model_copy(update={"model": model.model_copy(
        update={"uri": str(folder), "version": "test:1"})})
    pipeline.run_stage("interests", run(1))
    pipeline.run_stage("recommend", run(1))

    items = [json.loads(line)["item_id"] for line in (landing / "items" / "items-0001.jsonl").read_text().splitlines()]
    new = [{"event_id": f"new-{n}", "user_id": user, "item_id": items[n], "event_type": "purchase",
            "ts": "2026-11-04T10:00:00Z"} for n, user in enumerate(["u-0003", "u-0007"])]
    (landing / "events" / "events-9001.jsonl").write_text("\n".join(json.dumps(e) for e in new) + "\n")
    for stage in ("ingest", "encode"):
        pipeline.run_stage(stage, run(2))
    report = pipeline.run_stage("interests", run(2))
    pipeline.run_stage("recommend", run(2))
    assert report.counts["users_changed"] == report.counts["users_rebuilt"] == 2
    assert_same_as_full_recompute(pipeline, lake, 3)
    interests, _ = snapshot(lake)
    assert {len(row.interest) for row in interests.values()} == {trained.model.dim}
