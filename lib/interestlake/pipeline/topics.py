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
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.schemas import arrow_schema, table_spec
from interestlake.lake.tables import CommitResult, LakeTables
from interestlake.pipeline.frames import Rows, map_in_arrow, with_values
from interestlake.pipeline.gather import Reader, SparkReader, reader
from interestlake.pipeline.history import written_rows, written_texts
from interestlake.pipeline.run import RunContext, driver_path, params_digest
from interestlake.settings import Settings, SteerTopicsSettings

STAGE = "topics"
INPUT_TABLES = (C.EVENTS, C.REVIEWS)
_RESULT_COLUMNS = [C.COL_USER_ID, C.COL_TOPIC, C.COL_WEIGHT, "phrases", "mentions", "last_seen"]
_WRITERS = T.StructType([T.StructField(C.COL_USER_ID, T.StringType())])


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
        read = reader(lake, driver_path(STAGE, lake, settings, since=since, now=tables))
        writers = writers_of(read, written_rows(read, tables, since=since))
        rows = None if read.is_empty(writers) else topic_rows(read, tables, conf, writers)
        if rows is None:
            # Nothing written (events without text): no user's topics change. Recording the
            # versions read keeps the next run from reading these changes again, which it
            # would do until the next text, however long that takes.
            counts["topic_rows"] = 0
            return [lake.record_progress(C.USER_TOPICS, txn=run.txn(STAGE), metadata=metadata)]
    else:
        rows = topic_rows(SparkReader(lake), tables, conf)
    rows = with_values(rows, {C.COL_RUN_ID: run.run_id, C.COL_UPDATED_AT: datetime.now(timezone.utc)})
    if incremental:
        commit = lake.merge(C.USER_TOPICS, rows, on=[C.COL_USER_ID], txn=run.txn(STAGE), metadata=metadata)
    else:
        commit = lake.overwrite(C.USER_TOPICS, rows, txn=run.txn(STAGE), metadata=metadata)
    counts["topic_rows"] = commit.source_rows
    return [commit]


def writers_of(read: Reader, written: Rows) -> Rows:
    """The users of ``written`` (``history.WRITTEN`` rows) with a review text or a search query."""
    return read.users(map_in_arrow(written, _writers, _WRITERS))


def topic_rows(read: Reader, now: dict, conf: SteerTopicsSettings, users: Rows | None = None) -> Rows:
    """``user_topics`` rows (without run columns) of ``users`` (None: everyone who wrote), from their whole history.

    ``read`` puts each user's raw ``WRITTEN`` rows together; one Arrow function (``_topics_of``)
    computes the rest, on the executors or on the driver.
    """
    schema = _result_schema()
    written = read.by_user(written_rows(read, now, users=users))
    return map_in_arrow(written, _topics_of(conf.half_life_days, conf.max_topics, conf.max_texts, arrow_schema(schema)), schema)


def _writers(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor function: ``WRITTEN`` batches in, the user_id of each row with text out."""
    for batch in batches:
        yield pa.RecordBatch.from_pydict({C.COL_USER_ID: [user for user, *_ in written_texts(batch)]},
                                         schema=pa.schema([(C.COL_USER_ID, pa.string())]))


def _result_schema() -> T.StructType:
    spec = table_spec(C.USER_TOPICS)
    return T.StructType([spec.schema[name] for name in _RESULT_COLUMNS])


def _topics_of(half_life_days: float, max_topics: int, max_texts: int, schema: pa.Schema):
    """Executor function: ``WRITTEN`` batches, each user's rows consecutive, in; topic rows out.

    A user's topics come from their newest ``max_texts`` texts, newest first (ties: text,
    then queries before reviews, descending); a user may span batches.
    """
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from interestlake.models.topics import user_topics

        out = {name: [] for name in _RESULT_COLUMNS}
        current, texts = None, []

        def finish():
            newest = sorted(texts, reverse=True)[:max_texts]
            written = [(ts.timestamp(), text, query) for ts, text, query in newest]
            for topic in user_topics(written, half_life_days, max_topics):
                out[C.COL_USER_ID].append(current)
                out[C.COL_TOPIC].append(topic.label)
                out[C.COL_WEIGHT].append(topic.weight)
                out["phrases"].append(list(topic.phrases))
                out["mentions"].append(topic.mentions)
                out["last_seen"].append(datetime.fromtimestamp(topic.last_seen, timezone.utc))

        for batch in batches:
            for user, ts, text, query in written_texts(batch):
                if user != current:
                    if current is not None:
                        finish()
                    current, texts = user, []
                texts.append((ts, text, query))
                if len(texts) > 2 * max_texts:
                    # Only the newest max_texts can be kept: memory stays bounded whatever the history.
                    texts = sorted(texts, reverse=True)[:max_texts]
            if out[C.COL_USER_ID]:
                yield pa.RecordBatch.from_pydict(out, schema=schema)
                out = {name: [] for name in _RESULT_COLUMNS}
        if current is not None:
            finish()
        if out[C.COL_USER_ID]:
            yield pa.RecordBatch.from_pydict(out, schema=schema)

    return run
