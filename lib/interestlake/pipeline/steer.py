"""Steered scoring of the recommend stage: needs, negative feedback, several interests, MMR, reasons.

Used by ``recommend`` when ``steer.enabled`` (the default). On the driver side it
gathers each scored user's evidence as columns (fresh search queries with their
vectors, disliked items with theirs, ratings, topic labels); on the executors each
task takes its users in blocks, builds every user's query vectors (one per interest
cluster of the recent history, one per fresh need), scans the item matrix block by
block keeping the best ``pool_factor * K`` candidates per query (a need's price bounds
applied in the scan), and hands each user's pooled candidates to
``interestlake.models.steering.assemble`` and ``interestlake.models.reasons.explain``.
Memory follows the block sizes, as in the plain scoring; nothing users x items is
shuffled or collected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.models.feedback import DislikeRule
from interestlake.models.interest import InterestParams
from interestlake.pipeline.frames import Rows, map_in_arrow
from interestlake.pipeline.history import entry_kind, item_text, text_hash
from interestlake.settings import Settings

_SECONDS_PER_HOUR = 3600.0
# A need whose freshness fell below this gets no slot.
_MIN_FRESHNESS = 0.05
# Per Python worker: item id -> (price, lower-cased text) of the last metadata folder read.
_META_CACHE: dict[str, dict[str, tuple[float, str]]] = {}


def dislike_rule(settings: Settings) -> DislikeRule | None:
    """The rule marking dislikes, or None when negative feedback is off."""
    steer = settings.steer
    if not (steer.enabled and steer.negative.enabled):
        return None
    return DislikeRule(steer.negative.max_rating, steer.negative.review_text_max_rating)


def with_dislike_weight(params: InterestParams, settings: Settings) -> InterestParams:
    """Interest parameters where ``dislike`` entries weigh ``steer.negative.weight`` (negative)."""
    if dislike_rule(settings) is None:
        return params
    return dataclasses.replace(params, event_weights={**params.event_weights, C.EVENT_DISLIKE: settings.steer.negative.weight})


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
    rule = dislike_rule(settings)
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
    from datetime import timedelta

    from interestlake.pipeline.history import lists_per_user, query_texts_on_driver, text_digest

    conf = settings.steer
    ids = users.column(C.COL_USER_ID).to_pylist()
    ref_ts = [recent[0][C.COL_TS] if recent else None for recent in users.column("recent").to_pylist()]
    evidence = {"ref_ts": pa.array(ref_ts, pa.timestamp("us", tz="UTC"))}
    event_rows = list(zip(*(events.column(n).to_pylist() for n in
                            (C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_ITEM_ID, C.COL_TEXT, C.COL_RATING))))
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
    rated = [(user, item, ts, rating) for user, ts, kind, item, _, rating in event_rows
             if kind == C.EVENT_RATE and rating is not None]
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


def stage_item_meta(lake: LakeTables, versions: dict, uri: str) -> None:
    """Writes (item_id, price, text) of the catalog to ``uri`` for the executors' constraint checks."""
    lake.read(C.ITEMS, versions[C.ITEMS]).select(
        C.COL_ITEM_ID, C.COL_PRICE, F.lower(item_text()).alias(C.COL_TEXT)
    ).write.mode("overwrite").parquet(uri)


def score_steered(user_side: Rows, items_uri: str, meta_uri: str, settings: Settings) -> Rows:
    """Top-K rows (user_id, rank, item_id, score, reason) of every user of ``user_side``, steered.

    Args:
        user_side: What ``recommend.score_users`` takes, plus the ``user_evidence`` columns (a
            DataFrame, or for a small batch an Arrow table, scored here on the driver).
        items_uri: Parquet files of (item_id, embedding).
        meta_uri: Parquet files of (item_id, price, text) from ``stage_item_meta``.
        settings: ``recommend`` (K, blocks) and ``steer``; the interests' event weights.
    """
    from interestlake.pipeline.recommend import _RANKED_SCHEMA

    return map_in_arrow(user_side, _steer_partition(items_uri, meta_uri, settings), _RANKED_SCHEMA)


def _steer_partition(items_uri: str, meta_uri: str, settings: Settings):
    """Builds the executor function of ``score_steered`` (kept free of Spark objects)."""
    recommend, steer = settings.recommend, settings.steer
    weights = dict(settings.interests.event_weights)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from interestlake.pipeline.recommend import (
            _RANKED_ARROW_SCHEMA, _item_blocks, _read_item_blocks, history_vectors, item_finder,
        )

        meta = _item_meta(meta_uri)
        blocks = _item_blocks(items_uri, recommend.item_block_size, recommend.item_cache_mb)
        find = item_finder(items_uri, recommend.item_block_size, blocks)
        for batch in batches:
            for start in range(0, batch.num_rows, recommend.user_block_size):
                block = batch.slice(start, recommend.user_block_size)
                rows = _user_rows(block, history_vectors(block, find))
                users = [_UserQueries(row, steer, weights) for row in rows]
                source = blocks if blocks is not None else _read_item_blocks(items_uri, recommend.item_block_size)
                pools = _pool(users, source, meta, recommend.k * steer.pool_factor)
                out = {name: [] for name in _RANKED_ARROW_SCHEMA.names}
                for user, (ids, vectors) in zip(users, pools):
                    for rank, (item_id, score, reason) in enumerate(user.rank(ids, vectors, meta, recommend.k, steer), 1):
                        for name, value in zip(_RANKED_ARROW_SCHEMA.names, (user.user_id, rank, item_id, score, reason)):
                            out[name].append(value)
                yield pa.RecordBatch.from_pydict(out, schema=_RANKED_ARROW_SCHEMA)

    return run


def _item_meta(meta_uri: str) -> dict[str, tuple[float, str]]:
    """item id -> (price or nan, text), read once per Python worker."""
    if meta_uri not in _META_CACHE:
        import pyarrow.dataset as ds

        from interestlake.datasets.landing import readable_uri

        table = ds.dataset(readable_uri(meta_uri), format="parquet").to_table()
        prices = [np.nan if p is None else float(p) for p in table.column(C.COL_PRICE).to_pylist()]
        _META_CACHE.clear()
        _META_CACHE[meta_uri] = dict(zip(table.column(C.COL_ITEM_ID).to_pylist(),
                                         zip(prices, [t or "" for t in table.column(C.COL_TEXT).to_pylist()])))
    return _META_CACHE[meta_uri]


# Vector columns of the user side: read as numpy, because turning (m, 384) float lists into
# Python floats and back cost more than the scoring itself.
_VECTOR_COLUMNS = ("interest", "disliked_vec", "need_vec")


def _user_rows(batch: pa.RecordBatch, history: list[np.ndarray]) -> list[dict]:
    """The batch's users as dicts; vector columns as float32 arrays ((d,) or (m, d), None when null).

    ``hist_vec`` is ``history`` (``recommend.history_vectors``: shipped or looked-up vectors).
    """
    rows = [{} for _ in range(batch.num_rows)]
    for name in batch.schema.names:
        column = batch.column(name)
        if name == "hist_vec":
            values = history
        elif name in _VECTOR_COLUMNS:
            values = _vector_values(column)
        else:
            values = column.to_pylist()
        for row, value in zip(rows, values):
            row[name] = value
    return rows


def _vector_values(column: pa.Array) -> list[np.ndarray | None]:
    """Per row of a list<float> or list<list<float>> column: its float32 array, None when null."""
    nested = pa.types.is_list(column.type.value_type)
    flat = column.flatten().flatten() if nested else column.flatten()
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32)
    # Offsets of a sliced array count from its parent's start; flatten() does not.
    outer = column.offsets.to_numpy()
    outer = outer - outer[0]
    inner = column.flatten().offsets.to_numpy() if nested else None
    if nested:
        inner = inner - inner[0]
    null = column.is_null().to_numpy(zero_copy_only=False)
    out: list[np.ndarray | None] = []
    for row in range(len(column)):
        if null[row]:
            out.append(None)
            continue
        first, last = outer[row], outer[row + 1]
        if not nested:
            out.append(values[first:last])
            continue
        start, stop = inner[first], inner[last]
        width = (inner[first + 1] - start) if last > first else 0
        out.append(values[start:stop].reshape(last - first, width) if width else np.zeros((last - first, 0), np.float32))
    return out


class _UserQueries:
    """One user's query vectors (interests, fresh needs) and what ranks their candidates."""

    def __init__(self, row: dict, steer, weights: dict[str, float]):
        from interestlake.models.interest import normalize
        from interestlake.models.multi_interest import cluster_interests
        from interestlake.models.needs import parse_need
        from interestlake.models.steering import NeedQuery

        self.user_id = row[C.COL_USER_ID]
        interest = np.asarray(row["interest"], dtype=np.float32)
        self.excluded = set(row.get("excluded") or ()) | set(row.get("disliked_items") or ())
        self.kinds = row.get("hist_kind") or []
        self.labels = row.get("hist_label") or []
        self.items = row.get("hist_item") or []
        empty = np.zeros((0, len(interest)), np.float32)
        self.history = empty if row.get("hist_vec") is None or not len(row["hist_vec"]) else row["hist_vec"]
        self.disliked = empty if row.get("disliked_vec") is None or not len(row["disliked_vec"]) else row["disliked_vec"]
        self.ratings = dict(zip(row.get("rated_items") or [], row.get("rated_values") or []))
        self.topics = row.get("topics") or []
        self.interests: list[tuple[np.ndarray, float]] = [(interest, 1.0)]
        liked = sum(kind != C.EVENT_DISLIKE for kind in self.kinds)
        if steer.multi_interest.enabled and liked > 1:
            # Liked entries weigh their event type's weight, disliked ones the negative weight.
            entry_weights = np.array([weights.get(kind) or 1.0 if kind != C.EVENT_DISLIKE else steer.negative.weight
                                      for kind in self.kinds])
            found = cluster_interests(self.history, entry_weights, steer.multi_interest.min_similarity,
                                      steer.multi_interest.max_interests, steer.multi_interest.min_share)
            if len(found) > 1 or (found and len(found[0].members) < liked):
                blend = steer.multi_interest.cluster_weight
                self.interests = [(normalize((1 - blend) * interest + blend * c.centre), c.share) for c in found]
        self.needs = []
        ref = row.get("ref_ts")
        for text, ts, vector in zip(row.get("need_text") or [], row.get("need_ts") or [], [] if row.get("need_vec") is None else row["need_vec"]):
            age_hours = max(0.0, (ref - ts).total_seconds() / _SECONDS_PER_HOUR) if ref is not None else 0.0
            freshness = 2.0 ** (-age_hours / steer.needs.half_life_hours)
            if freshness >= _MIN_FRESHNESS:
                self.needs.append(NeedQuery(parse_need(text), np.asarray(vector, dtype=np.float32), freshness))

    def queries(self) -> list[tuple[np.ndarray, float, float]]:
        """(vector, price_min, price_max) of each query; nan: no bound."""
        rows = [(vector, np.nan, np.nan) for vector, _ in self.interests]
        for query in self.needs:
            low = np.nan if query.need.price_min is None else query.need.price_min
            high = np.nan if query.need.price_max is None else query.need.price_max
            rows.append((query.vector, low, high))
        return rows

    def rank(self, ids: list[str], vectors: np.ndarray, meta: dict, k: int, steer) -> list[tuple[str, float, str]]:
        """(item id, score, reason) of the user's top K from their pooled candidates."""
        from interestlake.models.reasons import ReasonWriter
        from interestlake.models.steering import assemble

        # Only needs read the candidates' texts and prices; reasons read the picks'.
        if self.needs:
            texts = [meta.get(item, (np.nan, ""))[1] for item in ids]
            prices = np.array([meta.get(item, (np.nan, ""))[0] for item in ids], dtype=np.float64)
        else:
            texts, prices = [], np.zeros(0)
        disliked = self.disliked if steer.negative.enabled else self.disliked[:0]
        picks = assemble(ids, vectors, prices, texts, self.interests, self.needs, disliked, k, steer)
        reason = ReasonWriter(self.history, self.kinds, self.labels, self.items, self.ratings, self.topics)
        facts = [meta.get(pick.item_id, (np.nan, "")) for pick in picks]
        reasons = reason.many(
            [pick.item_id for pick in picks], np.array([pick.vector for pick in picks]), [text for _, text in facts],
            [price for price, _ in facts], [None if pick.need is None else self.needs[pick.need].need for pick in picks],
        )
        return [(pick.item_id, pick.score, line) for pick, line in zip(picks, reasons)]


def _pool(users: list[_UserQueries], blocks, meta: dict, depth: int) -> list[tuple[list[str], np.ndarray]]:
    """Each user's candidates: the union of the best ``depth`` items of each of their queries, sorted by id.

    One pass over the item blocks for the whole user block: every query row is scored
    against each block (float32), the user's excluded items and a need's price bounds
    masked, and the running best ``depth`` per row kept. Masks and bookkeeping are
    array operations over the whole user block, not loops per user.
    """
    rows = [(u, *query) for u, user in enumerate(users) for query in user.queries()]
    if not rows:
        return [([], np.zeros((0, 0), np.float32)) for _ in users]
    queries = np.stack([np.asarray(vector, dtype=np.float32) for _, vector, _, _ in rows])
    owner = np.array([u for u, _, _, _ in rows])
    bounds = np.array([(low, high) for _, _, low, high in rows], dtype=np.float64)
    bounded = np.flatnonzero(~np.isnan(bounds).all(axis=1))
    # (query row, item id) of every exclusion, so each block masks them with one assignment.
    excluded_rows, excluded_items = [], []
    for row, (u, _, _, _) in enumerate(rows):
        excluded_rows += [row] * len(users[u].excluded)
        excluded_items += list(users[u].excluded)
    excluded_rows = np.array(excluded_rows, dtype=np.int64)
    best = np.full((len(rows), 0), -np.inf, dtype=np.float32)
    keys = np.zeros((len(rows), 0), dtype=np.int64)
    # Every candidate that entered some row's best: its key (position in the catalog), id and vector.
    stored_keys, stored_ids, stored_vectors = [np.zeros(0, np.int64)], [], [np.zeros((0, queries.shape[1]), np.float32)]
    offset = 0
    for item_ids, item_vectors, _ in blocks:
        scores = queries @ np.asarray(item_vectors, dtype=np.float32).T
        if len(excluded_items):
            position = {item: column for column, item in enumerate(item_ids)}
            columns = np.array([position.get(item, -1) for item in excluded_items], dtype=np.int64)
            here = columns >= 0
            scores[excluded_rows[here], columns[here]] = -np.inf
        if len(bounded):
            prices = np.array([meta.get(item, (np.nan, ""))[0] for item in item_ids], dtype=np.float64)
            for row in bounded:
                low, high = bounds[row]
                outside = np.isnan(prices) | (prices < (low if not np.isnan(low) else -np.inf)) | (
                    prices > (high if not np.isnan(high) else np.inf))
                scores[row, outside] = -np.inf
        merged = np.concatenate([best, scores], axis=1)
        merged_keys = np.concatenate([keys, np.broadcast_to(offset + np.arange(len(item_ids)), scores.shape)], axis=1)
        keep = min(depth, merged.shape[1])
        chosen = np.argpartition(-merged, keep - 1, axis=1)[:, :keep]
        best = np.take_along_axis(merged, chosen, axis=1)
        keys = np.take_along_axis(merged_keys, chosen, axis=1)
        fresh = np.unique(keys[np.isfinite(best) & (keys >= offset)])
        stored_keys.append(fresh)
        stored_ids += [item_ids[key] for key in (fresh - offset).tolist()]
        stored_vectors.append(np.asarray(item_vectors, dtype=np.float32)[fresh - offset])
        offset += len(item_ids)
    # Keys were stored block by block in increasing order, so searchsorted finds them.
    all_keys, all_vectors = np.concatenate(stored_keys), np.concatenate(stored_vectors)
    id_rank = np.argsort(np.argsort(np.array(stored_ids, dtype=object), kind="stable"), kind="stable")
    # Query rows are grouped by user, in user order.
    counts = np.bincount(owner, minlength=len(users))
    pools = []
    for user_keys, user_best in zip(np.split(keys, np.cumsum(counts)[:-1]), np.split(best, np.cumsum(counts)[:-1])):
        slots = np.searchsorted(all_keys, np.unique(user_keys[np.isfinite(user_best)]))
        slots = slots[np.argsort(id_rank[slots], kind="stable")]  # sorted by item id
        pools.append(([stored_ids[slot] for slot in slots.tolist()], all_vectors[slots]))
    return pools
