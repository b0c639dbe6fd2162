"""What the recommend stage knows of each user it scores: the user side, gathered on Spark or on the driver.

One row per scored user: the interest vector, the items never to offer again
(``excluded``), the recent history behind reasons and several interests (``hist_*``,
newest first) and, with ``steer`` on, the evidence of what the user wrote: fresh search
queries with their vectors (needs), disliked items with theirs, ratings and topic labels.
``interestlake.pipeline.scorer`` turns these rows into lists; this module only gathers.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.models.feedback import dislike_rule
from interestlake.pipeline.history import (
    entry_kind, lists_per_user, query_texts_on_driver, resolve_vectors, resolve_vectors_on_driver, stored_refs,
    stored_refs_on_driver, text_digest, text_hash,
)
from interestlake.settings import Settings


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
    side = (
        users.drop("recent")
        .join(excluded_items(lake, versions, scored, settings.recommend.exclude_event_types), C.COL_USER_ID, "left")
        .join(reason_history(recent, lake.read(C.ITEMS, versions[C.ITEMS]).select(C.COL_ITEM_ID)), C.COL_USER_ID, "left")
    )
    if settings.steer.enabled:
        side = side.join(user_evidence(lake, settings, versions, users), C.COL_USER_ID, "left")
    return side


def user_side_on_driver(lake: LakeTables, settings: Settings, versions: dict, users: pa.Table) -> pa.Table:
    """``user_side`` for a few users, gathered on the driver.

    Their events and reviews are read once, filtered to them; the excluded items,
    the reason history and (steered) the evidence are the same columns the Spark
    joins give, null where those give null.
    """
    ids = users.column(C.COL_USER_ID).to_pylist()
    of_users = ds.field(C.COL_USER_ID).isin(pa.array(ids, pa.string()))
    events = lake.read_arrow(
        C.EVENTS, [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_ITEM_ID, C.COL_TEXT, C.COL_RATING], of_users,
        versions[C.EVENTS],
    )
    reviews = lake.read_arrow(C.REVIEWS, [C.COL_USER_ID, C.COL_TS, C.COL_ITEM_ID, C.COL_RATING], of_users, versions[C.REVIEWS])
    columns = {C.COL_USER_ID: users.column(C.COL_USER_ID), "interest": users.column("interest")}
    # excluded_items: distinct (user, item) of the excluded event types and of reviews.
    excluded_types = set(settings.recommend.exclude_event_types)
    excluding = events.filter(pc.fill_null(pc.and_(
        pc.is_in(events.column(C.COL_EVENT_TYPE), value_set=pa.array(sorted(excluded_types), pa.string())),
        pc.is_valid(events.column(C.COL_ITEM_ID))), False))
    pairs = sorted(
        set(zip(*(excluding.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_ITEM_ID))))
        | {(user, item) for user, item in zip(*(reviews.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_ITEM_ID)))})
    pairs_table = pa.table({C.COL_USER_ID: pa.array([u for u, _ in pairs], pa.string()),
                            "excluded": pa.array([i for _, i in pairs], pa.string())})
    columns.update(lists_per_user(ids, pairs_table, ["excluded"]))
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
        columns.update(user_evidence_on_driver(lake, settings, versions, users, events, reviews))
    return pa.table(columns)


def excluded_items(lake: LakeTables, versions: dict, users: DataFrame, event_types: list[str]) -> DataFrame:
    """(user_id, excluded): items the given users must not be offered again (bought, reviewed...)."""
    events = lake.read(C.EVENTS, versions[C.EVENTS]).filter(
        F.col(C.COL_EVENT_TYPE).isin(list(event_types)) & F.col(C.COL_ITEM_ID).isNotNull()
    )
    reviewed = lake.read(C.REVIEWS, versions[C.REVIEWS])
    pairs = events.select(C.COL_USER_ID, C.COL_ITEM_ID).unionByName(reviewed.select(C.COL_USER_ID, C.COL_ITEM_ID))
    return (
        pairs.join(F.broadcast(users), C.COL_USER_ID, "left_semi")
        .groupBy(C.COL_USER_ID)
        .agg(F.collect_set(C.COL_ITEM_ID).alias("excluded"))
    )


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
    """Per scored user: fresh needs, disliked items, ratings and topics (one row per user, arrays).

    Args:
        lake: Table layer.
        settings: ``steer`` and ``encoder.version``.
        versions: Input table versions of the stage.
        users: user_id and ``recent`` (newest first) of the users to score.

    Returns:
        user_id, ref_ts (the newest history entry), need_text, need_ts, need_vec,
        disliked_items, disliked_vec, rated_items, rated_values, topics.
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
    ratings = (
        events.filter((F.col(C.COL_EVENT_TYPE) == C.EVENT_RATE) & F.col(C.COL_RATING).isNotNull())
        .select(C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, C.COL_RATING)
        .unionByName(reviews.select(C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, C.COL_RATING))
        .groupBy(C.COL_USER_ID, C.COL_ITEM_ID)
        .agg(F.max_by(C.COL_RATING, C.COL_TS).alias(C.COL_RATING))
        .groupBy(C.COL_USER_ID)
        .agg(F.sort_array(F.collect_list(F.struct(C.COL_ITEM_ID, C.COL_RATING))).alias("_r"))
        .select(C.COL_USER_ID, F.col(f"_r.{C.COL_ITEM_ID}").alias("rated_items"),
                F.col(f"_r.{C.COL_RATING}").alias("rated_values"))
    )
    evidence = evidence.join(ratings, C.COL_USER_ID, "left")
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


def user_evidence_on_driver(
    lake: LakeTables, settings: Settings, versions: dict, users: pa.Table, events: pa.Table, reviews: pa.Table
) -> dict[str, pa.Array]:
    """``user_evidence`` of a small batch on the driver (without a dislike rule): its columns, one row per user.

    Args:
        users: user_id and ``recent`` of the users to score.
        events: Their events (user_id, ts, event_type, item_id, text, rating), whole history.
        reviews: Their reviews (user_id, ts, item_id, rating), whole history.
    """
    conf = settings.steer
    ids = users.column(C.COL_USER_ID).to_pylist()
    ref_ts = [recent[0][C.COL_TS] if recent else None for recent in users.column("recent").to_pylist()]
    evidence = {"ref_ts": pa.array(ref_ts, pa.timestamp("us", tz="UTC"))}
    if conf.needs.enabled:
        oldest = {user: ts - timedelta(seconds=int(conf.needs.max_age_days * 86400))
                  for user, ts in zip(ids, ref_ts) if ts is not None}
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
    # max_by(rating, ts) per (user, item), then sort_array(struct(item_id, rating)) per user.
    latest: dict[tuple, tuple] = {}
    # Only rating events become Python rows (a history is mostly other events).
    rates = events.filter(pc.fill_null(pc.and_(pc.equal(events.column(C.COL_EVENT_TYPE), C.EVENT_RATE),
                                               pc.is_valid(events.column(C.COL_RATING))), False))
    rated = list(zip(*(rates.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, C.COL_RATING))))
    rated += zip(*(reviews.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, C.COL_RATING)))
    for user, item, ts, rating in rated:
        if (user, item) not in latest or ts > latest[(user, item)][0]:
            latest[(user, item)] = (ts, rating)
    ordered = sorted(latest.items(), key=lambda e: (e[0][0], e[0][1] is not None, e[0][1] or "",
                                                   e[1][1] is not None, e[1][1] or 0.0))
    ratings = pa.table({
        C.COL_USER_ID: pa.array([user for (user, _), _ in ordered], pa.string()),
        "rated_items": pa.array([item for (_, item), _ in ordered], pa.string()),
        "rated_values": pa.array([rating for _, (_, rating) in ordered], pa.float64()),
    })
    evidence.update(lists_per_user(ids, ratings, ["rated_items", "rated_values"]))
    if conf.topics.enabled:
        topics = lake.read_arrow(C.USER_TOPICS, [C.COL_USER_ID, C.COL_WEIGHT, C.COL_TOPIC],
                                 ds.field(C.COL_USER_ID).isin(pa.array(ids, pa.string())))
        # sort_array(struct(-weight, topic)): heaviest first, then by name.
        topics = topics.sort_by([(C.COL_WEIGHT, "descending"), (C.COL_TOPIC, "ascending")])
        topics = topics.rename_columns([C.COL_USER_ID, C.COL_WEIGHT, "topics"])
        evidence.update(lists_per_user(ids, topics, ["topics"]))
    return evidence
