"""What the recommend stage knows of each user it scores: the user side, gathered on Spark or on the driver.

One row per scored user: the interest vector, the items never to offer again
(``excluded``), the recent history behind reasons and several interests (``hist_*``,
newest first) and, with ``steer`` on, the evidence of what the user wrote: fresh search
queries with their vectors (needs), disliked items with theirs, ratings and topic labels.
``interestlake.pipeline.scorer`` turns these rows into lists; this module only gathers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.models.feedback import dislike_rule
from interestlake.pipeline.frames import Rows, map_in_arrow
from interestlake.pipeline.gather import ArrowReader, Reader, SparkReader, per_user
from interestlake.pipeline.history import (
    entry_kind, lists_per_user, query_texts_on_driver, resolve_vectors, resolve_vectors_on_driver, stored_refs,
    stored_refs_on_driver, text_digest, text_hash,
)
from interestlake.settings import Settings

# What the reader hands over of each scored user's events and reviews: raw rows, a review's
# event_type null. ``_user_facts`` derives the excluded items and the ratings from them.
USER_ROWS = pa.schema([(C.COL_USER_ID, pa.string()), (C.COL_TS, pa.timestamp("us", tz="UTC")),
                       (C.COL_EVENT_TYPE, pa.string()), (C.COL_ITEM_ID, pa.string()), (C.COL_RATING, pa.float64())])
_FACTS = T.StructType([T.StructField(C.COL_USER_ID, T.StringType()),
                       T.StructField("excluded", T.ArrayType(T.StringType())),
                       T.StructField("rated_items", T.ArrayType(T.StringType())),
                       T.StructField("rated_values", T.ArrayType(T.DoubleType()))])
_RATED = ["rated_items", "rated_values"]


def user_side(lake: LakeTables, settings: Settings, versions: dict, users: DataFrame) -> DataFrame:
    """The scorer's input for ``users`` (user_id, interest, recent), one row each, as Spark joins.

    Args:
        lake: Table layer.
        settings: ``recommend.exclude_event_types``, ``steer``, ``encoder.version``.
        versions: Input table versions of the stage.
        users: user_id, interest and ``recent`` of the users to score.
    """
    scored = users.select(C.COL_USER_ID)
    # The entries behind each user's short-term vector, stored by the interests stage.
    recent = resolve_vectors(lake, settings.encoder.version, versions, stored_refs(users))
    facts = user_facts(SparkReader(lake), versions, scored, settings.recommend.exclude_event_types)
    side = (
        users.drop("recent")
        .join(facts if settings.steer.enabled else facts.drop(*_RATED), C.COL_USER_ID, "left")
        .join(reason_history(recent, lake.read(C.ITEMS, versions[C.ITEMS]).select(C.COL_ITEM_ID)), C.COL_USER_ID, "left")
    )
    if not settings.steer.enabled:
        return side
    side = side.join(user_evidence(lake, settings, versions, users), C.COL_USER_ID, "left")
    # The ratings belong with the evidence, before the topics: the driver path's column order.
    columns = [name for name in side.columns if name not in _RATED]
    at = columns.index("topics") if "topics" in columns else len(columns)
    return side.select(*columns[:at], *_RATED, *columns[at:])


def user_side_on_driver(lake: LakeTables, settings: Settings, versions: dict, users: pa.Table) -> pa.Table:
    """``user_side`` for a few users, gathered on the driver.

    The excluded items and ratings come from ``user_facts`` with the Arrow reader (the
    function the Spark path runs); the reason history and (steered) the other evidence are
    the same columns the Spark joins give, null where those give null.
    """
    ids = users.column(C.COL_USER_ID).to_pylist()
    scored = users.select([C.COL_USER_ID])
    facts = user_facts(ArrowReader(lake), versions, scored, settings.recommend.exclude_event_types)
    row_of = {user: i for i, user in enumerate(facts.column(C.COL_USER_ID).to_pylist())}
    # A left join's nulls: a user without events or reviews has no row of facts.
    facts = facts.take(pa.array([row_of.get(user) for user in ids], pa.int64()))
    columns = {C.COL_USER_ID: users.column(C.COL_USER_ID), "interest": users.column("interest"),
               "excluded": facts.column("excluded")}
    # reason_history: resolved recent entries by recency; a listed item's vector is looked up by the scorer.
    recent = resolve_vectors_on_driver(lake, settings.encoder.version, versions, stored_refs_on_driver(users))
    recent = recent.take(pc.sort_indices(recent, [("recency", "ascending")]))
    recent_items = pc.unique(pc.drop_null(recent.column(C.COL_ITEM_ID).combine_chunks()))
    listed = lake.read_arrow(C.ITEMS, [C.COL_ITEM_ID], ds.field(C.COL_ITEM_ID).isin(recent_items), versions[C.ITEMS])
    shipped = pc.or_(pc.is_valid(recent.column(C.COL_TEXT_HASH)),
                     pc.invert(pc.is_in(recent.column(C.COL_ITEM_ID), value_set=listed.column(C.COL_ITEM_ID).combine_chunks())))
    embedding = recent.column(C.COL_EMBEDDING).combine_chunks()
    recent = recent.set_column(recent.schema.get_field_index(C.COL_EMBEDDING), C.COL_EMBEDDING,
                               pc.if_else(pc.fill_null(shipped, True), embedding, pa.scalar(None, embedding.type)))
    history = lists_per_user(ids, recent, ["kind", C.COL_ITEM_ID, "label", C.COL_TS, C.COL_EMBEDDING])
    vectors, positions = shipped_vectors(history[C.COL_EMBEDDING])
    columns.update({"hist_kind": history["kind"], "hist_item": history[C.COL_ITEM_ID], "hist_label": history["label"],
                    "hist_ts": history[C.COL_TS], "hist_vec": vectors, "hist_shipped": positions})
    if settings.steer.enabled:
        evidence = user_evidence_on_driver(lake, settings, versions, users)
        topics = evidence.pop("topics", None)
        columns.update(evidence)
        columns.update({name: facts.column(name) for name in _RATED})
        if topics is not None:
            columns["topics"] = topics
    return pa.table(columns)


def user_facts(read: Reader, versions: dict, users: Rows, event_types: list[str]) -> Rows:
    """(user_id, excluded, rated_items, rated_values) of ``users`` (a user_id column), one row per user with rows.

    ``read`` puts each user's raw ``USER_ROWS`` together (events of the excluded types and
    ratings, reviews); one Arrow function (``_user_facts``) derives the lists, on the executors
    or on the driver.
    """
    kinds = sorted({*event_types, C.EVENT_RATE})
    events = read.of_users(C.EVENTS, versions[C.EVENTS], [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_ITEM_ID,
                                                         C.COL_RATING], users, [(C.COL_EVENT_TYPE, "in", kinds)])
    reviews = read.of_users(C.REVIEWS, versions[C.REVIEWS], [C.COL_USER_ID, C.COL_TS, C.COL_ITEM_ID, C.COL_RATING], users)
    return map_in_arrow(read.by_user(read.union([events, reviews])), _user_facts(event_types), _FACTS)


def _user_facts(event_types: list[str]):
    """Executor function: ``USER_ROWS`` batches, each user's rows consecutive, in; one row of facts per user out.

    ``excluded``: the items of the excluded event types and of reviews, sorted; the ratings:
    each item's latest rating (rate events with a rating, reviews), sorted by item, then
    rating (``sort_array`` of (item_id, rating)); null where a user has none.
    """
    excluding = set(event_types)
    schema = pa.schema([(C.COL_USER_ID, pa.string()), ("excluded", pa.list_(pa.string())),
                        (_RATED[0], pa.list_(pa.string())), (_RATED[1], pa.list_(pa.float64()))])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        out = {name: [] for name in schema.names}
        for rows in per_user(batches, USER_ROWS):
            users, times, kinds, items, ratings = (rows.column(name).to_pylist() for name in USER_ROWS.names)
            excluded = sorted({item for kind, item in zip(kinds, items)
                               if item is not None and (kind is None or kind in excluding)})
            latest: dict[str | None, tuple] = {}
            for ts, kind, item, rating in zip(times, kinds, items, ratings):
                rated = kind is None or (kind == C.EVENT_RATE and rating is not None)
                if rated and (item not in latest or ts > latest[item][0]):
                    latest[item] = (ts, rating)
            ordered = sorted(latest.items(), key=lambda e: (e[0] is not None, e[0] or "", e[1][1] is not None,
                                                             e[1][1] or 0.0))
            out[C.COL_USER_ID].append(users[0])
            out["excluded"].append(excluded or None)
            out[_RATED[0]].append([item for item, _ in ordered] or None)
            out[_RATED[1]].append([rating for _, (_, rating) in ordered] or None)
            if len(out[C.COL_USER_ID]) >= 1024:
                yield pa.RecordBatch.from_pydict(out, schema=schema)
                out = {name: [] for name in schema.names}
        if out[C.COL_USER_ID]:
            yield pa.RecordBatch.from_pydict(out, schema=schema)

    return run


def reason_history(recent: DataFrame, listed: DataFrame) -> DataFrame:
    """(user_id, hist_kind, hist_item, hist_label, hist_ts, hist_vec, hist_shipped): recent entries as arrays, newest first.

    An entry's vector is shipped only when the scoring workers cannot look it up: a text's
    vector (searches, reviews), or an item no longer in the catalog. An entry of a listed
    item takes its item's vector from the item matrix each worker holds: shipping 20
    vectors per user through the joins, the shuffle and Arrow cost more than scoring them.
    ``hist_vec`` holds only the shipped vectors, ``hist_shipped`` the position of each one's
    entry: even a null per entry cost the JVM's Arrow conversion a fifth of its time.

    Args:
        recent: The users' resolved recent entries (``resolve_vectors`` of ``stored_refs``).
        listed: item_id of the items in the staged item matrix (the catalog).
    """
    shipped = recent.join(listed.select(C.COL_ITEM_ID, F.lit(True).alias("_listed")), C.COL_ITEM_ID, "left").withColumn(
        C.COL_EMBEDDING,
        F.when(F.col(C.COL_TEXT_HASH).isNull() & F.col("_listed").isNotNull(), F.lit(None)).otherwise(F.col(C.COL_EMBEDDING)),
    )
    # collect_list keeps no order: sort by recency (1 = newest).
    grouped = shipped.groupBy(C.COL_USER_ID).agg(
        F.sort_array(F.collect_list(F.struct("recency", "kind", C.COL_ITEM_ID, "label", C.COL_TS, C.COL_EMBEDDING)))
        .alias("_hist")
    )
    return grouped.select(
        C.COL_USER_ID,
        F.col("_hist.kind").alias("hist_kind"),
        F.col(f"_hist.{C.COL_ITEM_ID}").alias("hist_item"),
        F.col("_hist.label").alias("hist_label"),
        F.col(f"_hist.{C.COL_TS}").alias("hist_ts"),
        F.expr(f"filter(_hist.{C.COL_EMBEDDING}, v -> v IS NOT NULL)").alias("hist_vec"),
        F.expr(f"filter(transform(_hist, (h, i) -> IF(h.{C.COL_EMBEDDING} IS NULL, -1, i)), i -> i >= 0)").alias("hist_shipped"),
    )


def shipped_vectors(aligned: pa.ListArray) -> tuple[pa.Array, pa.Array]:
    """``reason_history``'s (hist_vec, hist_shipped) from one vector-or-null per entry, on the driver."""
    import numpy as np

    offsets = aligned.offsets.to_numpy()
    offsets = offsets - offsets[0]
    entries = aligned.flatten()
    valid = entries.is_valid().to_numpy(zero_copy_only=False)
    counted = np.r_[0, np.cumsum(valid)].astype(np.int32)
    rows = np.flatnonzero(valid)
    owner = np.searchsorted(offsets, rows, side="right") - 1
    missing = aligned.is_null()
    vectors = pa.ListArray.from_arrays(pa.array(counted[offsets]), entries.filter(pa.array(valid)), mask=missing)
    positions = pa.ListArray.from_arrays(pa.array(counted[offsets]), pa.array((rows - offsets[owner]).astype(np.int32)),
                                         mask=missing)
    return vectors, positions


def user_evidence(lake: LakeTables, settings: Settings, versions: dict, users: DataFrame) -> DataFrame:
    """Per scored user: fresh needs, disliked items and topics (one row per user, arrays).

    Args:
        lake: Table layer.
        settings: ``steer`` and ``encoder.version``.
        versions: Input table versions of the stage.
        users: user_id and ``recent`` (newest first) of the users to score.

    Returns:
        user_id, ref_ts (the newest history entry), need_text, need_ts, need_vec,
        disliked_items, disliked_vec, topics (the ratings: ``user_facts``).
    """
    conf = settings.steer
    version = settings.encoder.version
    ids = users.select(C.COL_USER_ID)
    ref = users.select(C.COL_USER_ID, F.col("recent")[0][C.COL_TS].alias("ref_ts"))
    events = lake.read(C.EVENTS, versions[C.EVENTS]).join(F.broadcast(ids), C.COL_USER_ID, "left_semi")
    reviews = lake.read(C.REVIEWS, versions[C.REVIEWS]).join(F.broadcast(ids), C.COL_USER_ID, "left_semi")
    evidence = ref
    if conf.needs.enabled:
        texts = (
            lake.read(C.TEXT_EMBEDDINGS, versions[C.TEXT_EMBEDDINGS])
            .filter(F.col(C.COL_ENCODER_VERSION) == version)
            .select(C.COL_TEXT_HASH, C.COL_EMBEDDING)
        )
        newest = Window.partitionBy(C.COL_USER_ID).orderBy(F.col(C.COL_TS).desc(), F.col(C.COL_TEXT))
        queries = (
            events.filter((F.col(C.COL_EVENT_TYPE) == C.EVENT_SEARCH) & (F.length(F.trim(C.COL_TEXT)) > 0))
            .select(C.COL_USER_ID, C.COL_TS, F.trim(C.COL_TEXT).alias(C.COL_TEXT))
            .join(ref, C.COL_USER_ID)
            .filter(F.col(C.COL_TS) >= F.col("ref_ts") - F.expr(f"INTERVAL {int(conf.needs.max_age_days * 86400)} SECONDS"))
            .withColumn("_n", F.row_number().over(newest))
            .filter(F.col("_n") <= conf.needs.max_queries)
            .withColumn(C.COL_TEXT_HASH, text_hash(F.col(C.COL_TEXT)))
            .join(texts, C.COL_TEXT_HASH)
            .groupBy(C.COL_USER_ID)
            .agg(F.sort_array(F.collect_list(F.struct(C.COL_TS, C.COL_TEXT, C.COL_EMBEDDING)), asc=False).alias("_q"))
            .select(C.COL_USER_ID, F.col(f"_q.{C.COL_TEXT}").alias("need_text"), F.col(f"_q.{C.COL_TS}").alias("need_ts"),
                    F.col(f"_q.{C.COL_EMBEDDING}").alias("need_vec"))
        )
        evidence = evidence.join(queries, C.COL_USER_ID, "left")
    rule = dislike_rule(settings.steer)
    if rule is not None:
        item_vectors = (
            lake.read(C.ITEM_EMBEDDINGS, versions[C.ITEM_EMBEDDINGS])
            .filter(F.col(C.COL_ENCODER_VERSION) == version)
            .select(C.COL_ITEM_ID, C.COL_EMBEDDING)
        )
        rated_events = events.filter(F.col(C.COL_ITEM_ID).isNotNull())
        kinds = rated_events.select(
            C.COL_USER_ID, C.COL_ITEM_ID,
            entry_kind(F.col(C.COL_EVENT_TYPE), rule, F.col(C.COL_EVENT_TYPE) == C.EVENT_RATE),
        ).unionByName(reviews.select(C.COL_USER_ID, C.COL_ITEM_ID, entry_kind(F.lit(C.EVENT_REVIEW), rule, F.lit(True), text=True)))
        disliked = (
            kinds.filter(F.col("kind") == C.EVENT_DISLIKE)
            .select(C.COL_USER_ID, C.COL_ITEM_ID)
            .distinct()
            .join(item_vectors, C.COL_ITEM_ID)
            .groupBy(C.COL_USER_ID)
            .agg(F.sort_array(F.collect_list(F.struct(C.COL_ITEM_ID, C.COL_EMBEDDING))).alias("_d"))
            .select(C.COL_USER_ID, F.col(f"_d.{C.COL_ITEM_ID}").alias("disliked_items"),
                    F.col(f"_d.{C.COL_EMBEDDING}").alias("disliked_vec"))
        )
        evidence = evidence.join(disliked, C.COL_USER_ID, "left")
    if conf.topics.enabled:
        topics = (
            lake.read(C.USER_TOPICS)
            .join(F.broadcast(ids), C.COL_USER_ID, "left_semi")
            .groupBy(C.COL_USER_ID)
            .agg(F.sort_array(F.collect_list(F.struct((-F.col(C.COL_WEIGHT)).alias("w"), C.COL_TOPIC))).alias("_t"))
            .select(C.COL_USER_ID, F.col(f"_t.{C.COL_TOPIC}").alias("topics"))
        )
        evidence = evidence.join(topics, C.COL_USER_ID, "left")
    return evidence


def user_evidence_on_driver(lake: LakeTables, settings: Settings, versions: dict, users: pa.Table) -> dict[str, pa.Array]:
    """``user_evidence`` of a small batch on the driver (without a dislike rule and the ratings): its columns.

    Args:
        users: user_id and ``recent`` of the users to score.
    """
    conf = settings.steer
    ids = users.column(C.COL_USER_ID).to_pylist()
    ref_ts = [recent[0][C.COL_TS] if recent else None for recent in users.column("recent").to_pylist()]
    evidence = {"ref_ts": pa.array(ref_ts, pa.timestamp("us", tz="UTC"))}
    if conf.needs.enabled:
        oldest = {user: ts - timedelta(seconds=int(conf.needs.max_age_days * 86400))
                  for user, ts in zip(ids, ref_ts) if ts is not None}
        events = ArrowReader(lake).of_users(C.EVENTS, versions[C.EVENTS], [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_TEXT],
                                            users.select([C.COL_USER_ID]), [(C.COL_EVENT_TYPE, "=", C.EVENT_SEARCH)])
        fresh: dict[str, list[tuple]] = {}
        for user, ts, query in query_texts_on_driver(events):
            if user in oldest and ts >= oldest[user]:
                fresh.setdefault(user, []).append((ts, query))
        # row_number() over (ts desc, text asc) <= max_queries, then only queries with a vector.
        chosen = [(user, ts, query) for user, queries in fresh.items()
                  for ts, query in sorted(sorted(queries, key=lambda q: q[1]), key=lambda q: q[0], reverse=True)
                  [: conf.needs.max_queries]]
        digests = sorted({text_digest(query) for _, _, query in chosen})
        found = lake.read_arrow(
            C.TEXT_EMBEDDINGS, [C.COL_TEXT_HASH, C.COL_EMBEDDING],
            (ds.field(C.COL_ENCODER_VERSION) == settings.encoder.version)
            & ds.field(C.COL_TEXT_HASH).isin(pa.array(digests, pa.string())),
            versions[C.TEXT_EMBEDDINGS],
        )
        row_of = {digest: i for i, digest in enumerate(found.column(C.COL_TEXT_HASH).to_pylist())}
        # sort_array(struct(ts, text, embedding), asc=False).
        kept = sorted(((user, ts, query, row_of[text_digest(query)]) for user, ts, query in chosen
                       if text_digest(query) in row_of), key=lambda q: (q[1], q[2]), reverse=True)
        needs = pa.table({
            C.COL_USER_ID: pa.array([q[0] for q in kept], pa.string()),
            "need_ts": pa.array([q[1] for q in kept], pa.timestamp("us", tz="UTC")),
            "need_text": pa.array([q[2] for q in kept], pa.string()),
            "need_vec": found.column(C.COL_EMBEDDING).combine_chunks().take(pa.array([q[3] for q in kept], pa.int64())),
        })
        evidence.update(lists_per_user(ids, needs, ["need_text", "need_ts", "need_vec"]))
    if conf.topics.enabled:
        topics = lake.read_arrow(C.USER_TOPICS, [C.COL_USER_ID, C.COL_WEIGHT, C.COL_TOPIC],
                                 ds.field(C.COL_USER_ID).isin(pa.array(ids, pa.string())))
        # sort_array(struct(-weight, topic)): heaviest first, then by name.
        topics = topics.sort_by([(C.COL_WEIGHT, "descending"), (C.COL_TOPIC, "ascending")])
        topics = topics.rename_columns([C.COL_USER_ID, C.COL_WEIGHT, "topics"])
        evidence.update(lists_per_user(ids, topics, ["topics"]))
    return evidence
