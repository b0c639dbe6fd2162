"""``user_topics``: interest topics of every user who wrote something, kept up to date incrementally.

Runs inside the interests stage (same inputs, its own commit): the users with new
reviews or search queries since the last commit to ``user_topics`` get their topics
recomputed from their newest ``steer.topics.max_texts`` texts
(``interestlake.models.topics``), and their rows are replaced in one commit (a merge on
``user_id``). The first run, a parameter change or ``full`` rewrites the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.schemas import arrow_schema, table_spec
from interestlake.lake.tables import CommitResult, LakeTables
from interestlake.pipeline.frames import map_in_arrow, with_values
from interestlake.pipeline.history import query_texts, query_texts_on_driver, review_texts, review_texts_on_driver
from interestlake.pipeline.run import RunContext, gather_on_driver, params_digest
from interestlake.settings import Settings, SteerTopicsSettings

STAGE = "topics"
INPUT_TABLES = (C.EVENTS, C.REVIEWS)
_RESULT_COLUMNS = [C.COL_USER_ID, C.COL_TOPIC, C.COL_WEIGHT, "phrases", "mentions", "last_seen"]


def refresh_topics(
    lake: LakeTables, settings: Settings, run: RunContext, counts: dict[str, int], full: bool = False
) -> list[CommitResult]:
    """Updates ``user_topics`` for the users who wrote something new.

    Args:
        lake: Table layer.
        settings: ``steer.topics`` (nothing is done when it or ``steer`` is disabled).
        run: Run identity.
        counts: Gets ``topic_rows`` (topic rows written).
        full: Recompute every user.

    Returns:
        The commit (none when nothing changed).
    """
    conf = settings.steer.topics
    if not (settings.steer.enabled and conf.enabled):
        return []
    tables = lake.versions(INPUT_TABLES)
    fingerprint = {"tables": tables, "params": params_digest(conf.model_dump())}
    last = lake.last_metadata(C.USER_TOPICS, stage=STAGE)
    previous = last.get("inputs") if last else None
    if not full and previous == fingerprint:
        return []
    incremental = not full and previous is not None and previous.get("params") == fingerprint["params"]
    metadata = {"stage": STAGE, "run_id": run.run_id, "inputs": fingerprint,
                "mode": "incremental" if incremental else "full"}
    if incremental:
        since = previous["tables"]
        if gather_on_driver(STAGE, lake, settings, since=since, now=tables):
            writers = _writers_on_driver(lake, since, tables)
            rows = _topic_rows_on_driver(lake, tables, writers, conf) if writers else None
        else:
            changed = written_texts(
                lake.changes(C.EVENTS, since.get(C.EVENTS), tables[C.EVENTS]),
                lake.changes(C.REVIEWS, since.get(C.REVIEWS), tables[C.REVIEWS]),
            ).select(C.COL_USER_ID).distinct()
            texts = _all_texts(lake, tables).join(F.broadcast(changed), C.COL_USER_ID, "left_semi")
            rows = None if changed.isEmpty() else topic_rows(texts, conf)
        if rows is None:
            # Nothing written (events without text): no user's topics change. Recording the
            # versions read keeps the next run from reading these changes again, which it
            # would do until the next text, however long that takes.
            counts["topic_rows"] = 0
            return [lake.record_progress(C.USER_TOPICS, txn=run.txn(STAGE), metadata=metadata)]
    else:
        rows = topic_rows(_all_texts(lake, tables), conf)
    rows = with_values(rows, {C.COL_RUN_ID: run.run_id, C.COL_UPDATED_AT: datetime.now(timezone.utc)})
    if incremental:
        commit = lake.merge(C.USER_TOPICS, rows, on=[C.COL_USER_ID], txn=run.txn(STAGE), metadata=metadata)
    else:
        commit = lake.overwrite(C.USER_TOPICS, rows, txn=run.txn(STAGE), metadata=metadata)
    counts["topic_rows"] = commit.source_rows
    return [commit]


def _all_texts(lake: LakeTables, tables: dict) -> DataFrame:
    return written_texts(lake.read(C.EVENTS, tables[C.EVENTS]), lake.read(C.REVIEWS, tables[C.REVIEWS]))


def written_texts(events: DataFrame, reviews: DataFrame) -> DataFrame:
    """(user_id, ts, text, query) of every review text and search query."""
    written = review_texts(reviews).select(C.COL_USER_ID, C.COL_TS, C.COL_TEXT, F.lit(False).alias("query"))
    return written.unionByName(query_texts(events).withColumn("query", F.lit(True)))


def topic_rows(texts: DataFrame, conf: SteerTopicsSettings) -> DataFrame:
    """``user_topics`` rows (without run columns) of every user in ``texts``."""
    per_user = texts.groupBy(C.COL_USER_ID).agg(
        F.slice(F.sort_array(F.collect_list(F.struct(C.COL_TS, C.COL_TEXT, "query")), asc=False), 1, conf.max_texts).alias("texts")
    )
    schema = _result_schema()
    return map_in_arrow(per_user, _topics_of(conf.half_life_days, conf.max_topics, arrow_schema(schema)), schema)


def _writers_on_driver(lake: LakeTables, since: dict, now: dict) -> list[str]:
    """Users with a review text or search query among the rows written since ``since`` (a small batch)."""
    events = lake.change_rows(C.EVENTS, since[C.EVENTS], now[C.EVENTS], [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_TEXT])
    reviews = lake.change_rows(C.REVIEWS, since[C.REVIEWS], now[C.REVIEWS], [C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, C.COL_TEXT])
    return sorted({user for user, _, _, _ in _written_on_driver(events, reviews)})


def _written_on_driver(events: pa.Table, reviews: pa.Table) -> list[tuple]:
    """``written_texts`` on the driver: (user_id, ts, text, query)."""
    return [(user, ts, text, False) for user, _, ts, text in review_texts_on_driver(reviews)] + [
        (user, ts, text, True) for user, ts, text in query_texts_on_driver(events)
    ]


def _topic_rows_on_driver(lake: LakeTables, now: dict, users: list[str], conf: SteerTopicsSettings) -> pa.Table:
    """``topic_rows`` of some users, from their whole history read on the driver with a filter on them."""
    import pyarrow.dataset as ds

    wanted = ds.field(C.COL_USER_ID).isin(pa.array(users, pa.string()))
    events = lake.read_arrow(C.EVENTS, [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_TEXT],
                             wanted & (ds.field(C.COL_EVENT_TYPE) == C.EVENT_SEARCH), now[C.EVENTS])
    reviews = lake.read_arrow(C.REVIEWS, [C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, C.COL_TEXT], wanted, now[C.REVIEWS])
    per_user: dict[str, list[tuple]] = {}
    for user, ts, text, query in _written_on_driver(events, reviews):
        per_user.setdefault(user, []).append((ts, text, query))
    # As sort_array(collect_list(struct(ts, text, query)), asc=False) then slice(1, max_texts).
    texts = [sorted(entries, reverse=True)[: conf.max_texts] for entries in (per_user[u] for u in sorted(per_user))]
    schema = _result_schema()
    users = pa.table(
        {C.COL_USER_ID: sorted(per_user),
         "texts": [[{C.COL_TS: ts, C.COL_TEXT: text, "query": query} for ts, text, query in entries] for entries in texts]},
    )
    return map_in_arrow(users, _topics_of(conf.half_life_days, conf.max_topics, arrow_schema(schema)), schema)


def _result_schema():
    from pyspark.sql import types as T

    spec = table_spec(C.USER_TOPICS)
    return T.StructType([spec.schema[name] for name in _RESULT_COLUMNS])


def _topics_of(half_life_days: float, max_topics: int, schema: pa.Schema):
    """Executor function: (user_id, texts) batches in, topic rows out."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from interestlake.models.topics import user_topics

        for batch in batches:
            out = {name: [] for name in _RESULT_COLUMNS}
            for user, texts in zip(batch.column(C.COL_USER_ID).to_pylist(), batch.column("texts").to_pylist()):
                written = [(entry[C.COL_TS].timestamp(), entry[C.COL_TEXT], entry["query"]) for entry in texts or []]
                for topic in user_topics(written, half_life_days, max_topics):
                    out[C.COL_USER_ID].append(user)
                    out[C.COL_TOPIC].append(topic.label)
                    out[C.COL_WEIGHT].append(topic.weight)
                    out["phrases"].append(list(topic.phrases))
                    out["mentions"].append(topic.mentions)
                    out["last_seen"].append(datetime.fromtimestamp(topic.last_seen, timezone.utc))
            yield pa.RecordBatch.from_pydict(out, schema=schema)

    return run
