"""What the recommend stage knows of each user it scores: the user side, gathered through one reader.

One row per scored user: the interest vector, the items never to offer again
(``excluded``), the recent history behind reasons and several interests (``hist_*``,
newest first) and, with ``steer`` on, the evidence of what the user wrote: fresh search
queries with their vectors (needs), disliked items with theirs, ratings and topic labels.
``interestlake.pipeline.scorer`` turns these rows into lists; this module only gathers.

Whichever reader gathers (``SparkReader`` for large batches, ``ArrowReader`` on the driver
for a small one), it only puts raw rows together: the users' events and reviews, their
stored entries, the rows of other tables matched by key, each user's rows as lists. What
derives from them (stored entries, excluded items and ratings, chosen needs, dislikes) is
computed by Arrow functions, the same on both paths; vectors are attached by lookups,
which are joins in the JVM on Spark.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pyarrow as pa
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.models.feedback import DislikeRule, dislike_rule
from interestlake.pipeline.frames import Rows, map_in_arrow
from interestlake.pipeline.gather import Reader, per_user
from interestlake.pipeline.history import (
    clean_text, history_refs, history_rows, resolve_vectors, stored_refs, text_digest,
)
from interestlake.settings import Settings, SteerNeedsSettings

# What the reader hands over of each scored user's events and reviews: raw rows, a review's
# event_type null. ``_user_facts`` derives the excluded items and the ratings from them.
USER_ROWS = pa.schema([(C.COL_USER_ID, pa.string()), (C.COL_TS, pa.timestamp("us", tz="UTC")),
                       (C.COL_EVENT_TYPE, pa.string()), (C.COL_ITEM_ID, pa.string()), (C.COL_RATING, pa.float64())])
_FACTS = T.StructType([T.StructField(C.COL_USER_ID, T.StringType()),
                       T.StructField("excluded", T.ArrayType(T.StringType())),
                       T.StructField("rated_items", T.ArrayType(T.StringType())),
                       T.StructField("rated_values", T.ArrayType(T.DoubleType()))])
_RATED = ["rated_items", "rated_values"]
# What the reader hands over for the needs: each scored user's search events (raw) and their
# newest stored entry (``recency`` 1, null on the searches); ``_needs_of`` chooses the queries.
NEED_ROWS = pa.schema([(C.COL_USER_ID, pa.string()), (C.COL_TS, pa.timestamp("us", tz="UTC")),
                       (C.COL_EVENT_TYPE, pa.string()), (C.COL_TEXT, pa.string()), ("recency", pa.int32())])
_CHOSEN = T.StructType([T.StructField(C.COL_USER_ID, T.StringType()), T.StructField(C.COL_TS, T.TimestampType()),
                        T.StructField(C.COL_TEXT, T.StringType()), T.StructField(C.COL_TEXT_HASH, T.StringType())])


def user_side(read: Reader, settings: Settings, versions: dict, users: Rows) -> Rows:
    """The scorer's input for ``users`` (user_id, interest, recent), one row each (Arrow: in their order).

    Args:
        read: The stage's reader.
        settings: ``recommend.exclude_event_types``, ``steer``, ``encoder.version``.
        versions: Input table versions of the stage.
        users: user_id, interest and ``recent`` of the users to score.
    """
    scored = users.select([C.COL_USER_ID])
    # The entries behind each user's short-term vector, stored by the interests stage.
    recent = stored_refs(users)
    facts = user_facts(read, versions, scored, settings.recommend.exclude_event_types)
    side = read.joined(users.select([C.COL_USER_ID, "interest"]),
                       facts if settings.steer.enabled else facts.select([C.COL_USER_ID, "excluded"]))
    side = read.joined(side, reason_history(read, settings.encoder.version, versions, recent))
    if not settings.steer.enabled:
        return side
    for part in user_evidence(read, settings, versions, scored, recent):
        side = read.joined(side, part)
    # The ratings belong with the evidence, before the topics.
    columns = [name for name in (side.column_names if isinstance(side, pa.Table) else side.columns) if name not in _RATED]
    at = columns.index("topics") if "topics" in columns else len(columns)
    return side.select([*columns[:at], *_RATED, *columns[at:]])


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


def reason_history(read: Reader, encoder_version: str, versions: dict, recent: Rows) -> Rows:
    """(user_id, hist_kind, hist_item, hist_label, hist_ts, hist_vec, hist_shipped): recent entries as lists, newest first.

    An entry's vector is shipped only when the scoring workers cannot look it up: a text's
    vector (searches, reviews), or an item no longer in the catalog. An entry of a listed
    item takes its item's vector from the item matrix each worker holds: shipping 20
    vectors per user through the joins, the shuffle and Arrow cost more than scoring them.
    ``hist_vec`` holds only the shipped vectors, ``hist_shipped`` the position of each one's
    entry: even a null per entry cost the JVM's Arrow conversion a fifth of its time.

    Args:
        read: The stage's reader.
        encoder_version: Which vectors to use.
        versions: Input table versions of the stage.
        recent: The users' stored entries (``stored_refs``).
    """
    resolved = resolve_vectors(read, encoder_version, versions, recent)
    listed = read.lookup(resolved, C.ITEMS, versions[C.ITEMS], C.COL_ITEM_ID, [], found="_listed")
    shipped = read.nulled(listed, C.COL_EMBEDDING, [(C.COL_TEXT_HASH, "null", None), ("_listed", "not null", None)])
    return read.lists(shipped, [("recency", "ascending")],
                      {"hist_kind": "kind", "hist_item": C.COL_ITEM_ID, "hist_label": "label", "hist_ts": C.COL_TS,
                       "hist_vec": C.COL_EMBEDDING}, sparse=("hist_vec", "hist_shipped"))


def user_evidence(read: Reader, settings: Settings, versions: dict, users: Rows, recent: Rows) -> list[Rows]:
    """Per scored user, in parts of one row per user: ref_ts (the newest stored entry), then with
    ``steer``'s switches fresh needs, disliked items and topics (the ratings: ``user_facts``).

    Args:
        read: The stage's reader.
        settings: ``steer`` and ``encoder.version``.
        versions: Input table versions of the stage.
        users: user_id of the users to score.
        recent: Their stored entries (``stored_refs``).

    Returns:
        (user_id, ref_ts), (user_id, need_text, need_ts, need_vec), (user_id, disliked_items,
        disliked_vec), (user_id, topics): those switched on, lists newest or heaviest first.
    """
    conf = settings.steer
    newest = read.where(recent, [("recency", "=", 1)]).select([C.COL_USER_ID, C.COL_TS, "recency"])
    parts = [read.renamed(newest.select([C.COL_USER_ID, C.COL_TS]), {C.COL_TS: "ref_ts"})]
    if conf.needs.enabled:
        parts.append(needs(read, conf.needs, settings.encoder.version, versions, users, newest))
    rule = dislike_rule(conf)
    if rule is not None:
        parts.append(disliked_items(read, rule, settings.encoder.version, versions, users))
    if conf.topics.enabled:
        topics = read.of_users(C.USER_TOPICS, None, [C.COL_USER_ID, C.COL_WEIGHT, C.COL_TOPIC], users)
        parts.append(read.lists(topics, [(C.COL_WEIGHT, "descending"), (C.COL_TOPIC, "ascending")], {"topics": C.COL_TOPIC}))
    return parts


def needs(read: Reader, conf: SteerNeedsSettings, encoder_version: str, versions: dict, users: Rows, newest: Rows) -> Rows:
    """(user_id, need_text, need_ts, need_vec) of the users with fresh queries that have a vector, newest first.

    ``read`` puts each user's ``NEED_ROWS`` together (search events, newest stored entry);
    ``_needs_of`` chooses the queries, the same on both paths; their vectors are looked up.
    """
    searches = read.of_users(C.EVENTS, versions[C.EVENTS], [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_TEXT],
                             users, [(C.COL_EVENT_TYPE, "=", C.EVENT_SEARCH)])
    chosen = map_in_arrow(read.by_user(read.union([searches, newest])),
                          _needs_of(int(conf.max_age_days * 86400), conf.max_queries), _CHOSEN)
    found = read.lookup(chosen, C.TEXT_EMBEDDINGS, versions[C.TEXT_EMBEDDINGS], C.COL_TEXT_HASH, [C.COL_EMBEDDING],
                        [(C.COL_ENCODER_VERSION, "=", encoder_version)], how="inner")
    return read.lists(found, [(C.COL_TS, "descending"), (C.COL_TEXT, "descending")],
                      {"need_text": C.COL_TEXT, "need_ts": C.COL_TS, "need_vec": C.COL_EMBEDDING})


def _needs_of(max_age_seconds: int, max_queries: int):
    """Executor function: ``NEED_ROWS`` batches, each user's rows consecutive, in; chosen queries out.

    A user's queries (trimmed search texts) no older than ``max_age_seconds`` before their
    newest stored entry, the newest ``max_queries`` of them (ties: by text), with the text's hash.
    """
    schema = pa.schema([(C.COL_USER_ID, pa.string()), (C.COL_TS, pa.timestamp("us", tz="UTC")),
                        (C.COL_TEXT, pa.string()), (C.COL_TEXT_HASH, pa.string())])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for rows in per_user(batches, NEED_ROWS):
            users, times, _, texts, recency = (rows.column(name).to_pylist() for name in NEED_ROWS.names)
            newest = next((ts for ts, place in zip(times, recency) if place == 1), None)
            if newest is None:
                continue
            oldest = newest - timedelta(seconds=max_age_seconds)
            queries = [(ts, text) for ts, text in ((ts, clean_text(t)) for ts, t, place in zip(times, texts, recency)
                                                   if place is None) if text and ts >= oldest]
            chosen = sorted(sorted(queries, key=lambda q: q[1]), key=lambda q: q[0], reverse=True)[:max_queries]
            yield pa.RecordBatch.from_pydict(
                {C.COL_USER_ID: [users[0]] * len(chosen), C.COL_TS: [ts for ts, _ in chosen],
                 C.COL_TEXT: [text for _, text in chosen], C.COL_TEXT_HASH: [text_digest(text) for _, text in chosen]},
                schema=schema)

    return run


def disliked_items(read: Reader, rule: DislikeRule, encoder_version: str, versions: dict, users: Rows) -> Rows:
    """(user_id, disliked_items, disliked_vec) of the users with a disliked item that has a vector, by item.

    The dislikes are ``history_refs``' (the interests stage's entries of kind ``dislike``).
    """
    refs = history_refs(history_rows(read, versions, users=users), rule)
    items = read.distinct(read.where(refs, [("kind", "=", C.EVENT_DISLIKE)]).select([C.COL_USER_ID, C.COL_ITEM_ID]))
    found = read.lookup(items, C.ITEM_EMBEDDINGS, versions[C.ITEM_EMBEDDINGS], C.COL_ITEM_ID, [C.COL_EMBEDDING],
                        [(C.COL_ENCODER_VERSION, "=", encoder_version)], how="inner")
    return read.lists(found, [(C.COL_ITEM_ID, "ascending")], {"disliked_items": C.COL_ITEM_ID, "disliked_vec": C.COL_EMBEDDING})
