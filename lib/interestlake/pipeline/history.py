"""Texts to encode and each user's history, shared by the encode, interests and
recommend stages so that all three agree on what a text and a history entry are.

A history entry is first a *reference* (user_id, ts, kind, item_id, text_hash,
label): small enough to store (``user_interests.recent`` keeps each user's last
N) and to shuffle. ``resolve_vectors`` attaches the embedding: the text's vector
when the entry has a ``text_hash``, else the item's vector.

A reader (``interestlake.pipeline.gather``) puts the raw rows together (``history_rows``,
``written_rows``, stored ``recent`` lists); references, counts and texts derive from them
by the Arrow functions here (``history_refs``, ``counted``, ``stored_refs``,
``texts_to_encode``), on the executors or on the driver: one definition for both paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.schemas import arrow_schema
from interestlake.models.feedback import DislikeRule, is_negative_text
from interestlake.pipeline.frames import Rows, map_in_arrow
from interestlake.pipeline.gather import ArrowReader, Reader, Where, conform

# What identifies and orders an entry; the stored `recent` structs have these fields.
REF_COLUMNS = [C.COL_TS, "kind", C.COL_ITEM_ID, C.COL_TEXT_HASH, "label"]
REF_FIELDS = ", ".join(
    f"{name} {kind}" for name, kind in zip(REF_COLUMNS, ["timestamp", "string", "string", "string", "string"])
)
HISTORY_COLUMNS = [C.COL_USER_ID, *REF_COLUMNS, C.COL_EMBEDDING]
_TIME = pa.timestamp("us", tz="UTC")
# What a gatherer of written texts hands over: search events and reviews, raw (a review's
# event_type is null); ``written_texts`` makes texts of them.
WRITTEN = pa.schema([(C.COL_USER_ID, pa.string()), (C.COL_TS, _TIME), (C.COL_EVENT_TYPE, pa.string()),
                     (C.COL_TEXT, pa.string())])
# What a gatherer of history hands over: events and reviews, raw (a review's event_type is
# null), each with its item's title (null: no item, or not in the catalog); ``history_refs``
# makes references of them, ``counted`` counts them.
HISTORY_ROWS = pa.schema([(C.COL_USER_ID, pa.string()), (C.COL_TS, _TIME), (C.COL_EVENT_TYPE, pa.string()),
                          (C.COL_ITEM_ID, pa.string()), (C.COL_TEXT, pa.string()), (C.COL_RATING, pa.float64()),
                          (C.COL_TITLE, pa.string())])
_TEXTS = T.StructType([T.StructField(C.COL_TEXT_HASH, T.StringType()), T.StructField(C.COL_TEXT, T.StringType())])
# History entry references (``history_refs``), and those stored in user_interests.recent with
# their place there (``stored_refs``, 1 = newest).
_REFS = T.StructType([T.StructField(C.COL_USER_ID, T.StringType()), T.StructField(C.COL_TS, T.TimestampType()),
                      *(T.StructField(name, T.StringType()) for name in REF_COLUMNS[1:])])
_STORED_REFS = T.StructType([*_REFS.fields, T.StructField("recency", T.IntegerType())])
# Events and reviews per user (``counted``).
_COUNTS = T.StructType([T.StructField(C.COL_USER_ID, T.StringType()), T.StructField("event_count", T.LongType()),
                        T.StructField("review_count", T.LongType())])


def text_hash(column: Column) -> Column:
    """Cache key of a text in ``text_embeddings``."""
    return F.sha2(column, 256)


def item_text(title: str = C.COL_TITLE, category: str = C.COL_CATEGORY, description: str = C.COL_DESCRIPTION) -> Column:
    """What the encoder reads for an item: title, category and description."""
    return F.concat_ws(". ", F.trim(title), F.trim(category), F.trim(description))


def _clean(column: str) -> Column:
    """Trimmed text, null when empty: the same text must hash the same everywhere."""
    trimmed = F.trim(F.col(column))
    return F.when(F.length(trimmed) > 0, trimmed)


def clean_text(text: str | None) -> str | None:
    """``_clean`` of one text on the driver: Spark's ``trim`` strips spaces (U+0020) only."""
    trimmed = text.strip(" ") if text is not None else None
    return trimmed or None


def text_digest(text: str) -> str:
    """``text_hash`` of one text on the driver."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def written_rows(read: Reader, now: Mapping[str, int], since: Mapping[str, int] | None = None,
                 users: Rows | None = None) -> Rows:
    """``WRITTEN`` rows: those written after ``since`` (the new ones), or the whole history of ``users`` (None: everyone)."""
    columns = {C.EVENTS: [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_TEXT], C.REVIEWS: [C.COL_USER_ID, C.COL_TS, C.COL_TEXT]}
    return _events_and_reviews(read, now, columns, {C.EVENTS: [(C.COL_EVENT_TYPE, "=", C.EVENT_SEARCH)]}, since, users)


def history_rows(read: Reader, now: Mapping[str, int], since: Mapping[str, int] | None = None,
                 users: Rows | None = None) -> Rows:
    """``HISTORY_ROWS``: the events and reviews written after ``since``, or the whole history of ``users``
    (None: everyone), each with its item's title (``lookup`` of the catalog, broadcast)."""
    columns = {C.EVENTS: [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_ITEM_ID, C.COL_TEXT, C.COL_RATING],
               C.REVIEWS: [C.COL_USER_ID, C.COL_TS, C.COL_ITEM_ID, C.COL_TEXT, C.COL_RATING]}
    rows = _events_and_reviews(read, now, columns, {}, since, users)
    return read.lookup(rows, C.ITEMS, now[C.ITEMS], C.COL_ITEM_ID, [C.COL_TITLE], small=True)


def _events_and_reviews(read: Reader, now: Mapping[str, int], columns: Mapping[str, list[str]], where: Mapping[str, Where],
                        since: Mapping[str, int] | None, users: Rows | None) -> Rows:
    """Some columns of the events and reviews written after ``since``, or of ``users``' (a review's event_type null)."""
    tables = (C.EVENTS, C.REVIEWS)
    if since is not None:
        parts = [read.changed(t, since[t], now[t], columns[t], where.get(t, ())) for t in tables]
    else:
        parts = [read.of_users(t, now[t], columns[t], users, where.get(t, ())) for t in tables]
    return read.union(parts)


def written_texts(batch: pa.RecordBatch) -> Iterator[tuple]:
    """(user_id, ts, text, query) of the rows of a ``WRITTEN`` batch with text (trimmed as Spark's ``trim``)."""
    batch = conform(batch, WRITTEN)
    for user, ts, kind, text in zip(*(batch.column(name).to_pylist() for name in WRITTEN.names)):
        cleaned = clean_text(text)
        if cleaned:
            yield user, ts, cleaned, kind is not None


def _hashed_texts(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor function: ``WRITTEN`` batches in, (text_hash, text) of each text out."""
    for batch in batches:
        texts = [text for _, _, text, _ in written_texts(batch)]
        yield pa.RecordBatch.from_pydict({C.COL_TEXT_HASH: [text_digest(text) for text in texts], C.COL_TEXT: texts},
                                         schema=pa.schema([(C.COL_TEXT_HASH, pa.string()), (C.COL_TEXT, pa.string())]))


def query_texts(events: DataFrame) -> DataFrame:
    """Search queries: (user_id, ts, text) of search events with text."""
    return (
        events.filter(F.col(C.COL_EVENT_TYPE) == C.EVENT_SEARCH)
        .select(C.COL_USER_ID, C.COL_TS, _clean(C.COL_TEXT).alias(C.COL_TEXT))
        .filter(F.col(C.COL_TEXT).isNotNull())
    )


def review_texts(reviews: DataFrame, *keep: str) -> DataFrame:
    """Review texts: (user_id, item_id, ts, text, *keep) of reviews with text."""
    return reviews.select(C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, _clean(C.COL_TEXT).alias(C.COL_TEXT), *keep).filter(
        F.col(C.COL_TEXT).isNotNull()
    )


def texts_to_encode(
    read: Reader, now: Mapping[str, int], since: Mapping[str, int] | None = None, catalog: bool = True
) -> Rows:
    """Distinct texts that may need an embedding: (text_hash, text).

    Review and query texts only from rows written after ``since`` (all when None),
    hashed by one Arrow function whichever reader gathered them; item texts, when
    ``catalog``, from the whole catalog (its size, not the history's), with Spark.
    """
    texts = map_in_arrow(written_rows(read, now, since=since), _hashed_texts, _TEXTS)
    if catalog:
        if isinstance(read, ArrowReader):
            raise ValueError("the catalog's texts are read with Spark (SparkReader), not on the driver")
        items = read.lake.read(C.ITEMS, now[C.ITEMS]).select(item_text().alias(C.COL_TEXT)).filter(F.length(C.COL_TEXT) > 0)
        texts = texts.unionByName(items.select(text_hash(F.col(C.COL_TEXT)).alias(C.COL_TEXT_HASH), C.COL_TEXT))
    return read.distinct(texts)


def history_refs(rows: Rows, dislike: DislikeRule | None = None) -> Rows:
    """History entry references (``REFS``: user_id, ts, kind, item_id, text_hash, label) of ``HISTORY_ROWS``.

    An item event refers to its item; a search to its query text; a review to
    both its item and its text (two entries). ``label`` is the item's title or
    the query text, for reasons. With a ``dislike`` rule, low-rated ``rate`` events
    and reviews (both entries) get the kind ``dislike`` (a negative weight). One Arrow
    function (``_refs_of``), on the executors or on the driver.
    """
    return map_in_arrow(rows, _refs_of(dislike), _REFS)


def _refs_of(dislike: DislikeRule | None):
    """Executor function: ``HISTORY_ROWS`` batches in, their ``REFS`` out (``history_refs``)."""
    schema = arrow_schema(_REFS)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = conform(batch, HISTORY_ROWS)
            users, times, kinds, items, texts, _, titles = rows.columns
            review = pc.is_null(kinds)
            kind = pc.coalesce(kinds, pa.scalar(C.EVENT_REVIEW))
            if dislike is not None:
                kind = pc.if_else(_disliked(rows, dislike), pa.scalar(C.EVENT_DISLIKE), kind)
            cleaned = pc.utf8_trim(texts, " ")  # Spark's trim: spaces only
            has_text = pc.fill_null(pc.greater(pc.utf8_length(cleaned), 0), False)
            searched = pc.and_(has_text, pc.fill_null(pc.equal(kinds, C.EVENT_SEARCH), False))
            written = pc.and_(has_text, review)
            about_item = pc.is_valid(items)
            # Entries about an item, labelled with its title; a review's text is about its item too.
            yield _refs_batch(schema, about_item, users, times, kind, items, None, titles)
            yield _refs_batch(schema, written, users, times, kind, items, _digests(cleaned, written), titles)
            yield _refs_batch(schema, searched, users, times, None, None, _digests(cleaned, searched), cleaned)

    return run


def _refs_batch(schema: pa.Schema, mask: pa.Array, users, times, kinds, items, digests, labels) -> pa.RecordBatch:
    """The rows of ``mask`` as ``REFS`` (``digests`` are of those rows already); None: null (kind: search)."""
    n = pc.sum(mask).as_py() or 0
    kinds = pa.repeat(pa.scalar(C.EVENT_SEARCH), n) if kinds is None else kinds.filter(mask)
    columns = [users.filter(mask), times.filter(mask), kinds, pa.nulls(n, pa.string()) if items is None else items.filter(mask),
               pa.nulls(n, pa.string()) if digests is None else digests, labels.filter(mask)]
    return pa.RecordBatch.from_arrays([column.cast(field.type) for column, field in zip(columns, schema)], schema=schema)


def _digests(texts: pa.Array, mask: pa.Array) -> pa.Array:
    """``text_digest`` of the texts where ``mask`` holds (those only, in order)."""
    return pa.array([text_digest(text) for text in texts.filter(mask).to_pylist()], pa.string())


def _disliked(rows: pa.RecordBatch, rule: DislikeRule) -> pa.Array:
    """Where ``rule`` counts a ``HISTORY_ROWS`` row against its item: a low ``rate`` event or review, or a
    middling review whose raw text is negative (``DislikeRule.is_dislike``; the text tested only there)."""
    kinds, ratings, texts = (rows.column(name) for name in (C.COL_EVENT_TYPE, C.COL_RATING, C.COL_TEXT))
    review = pc.is_null(kinds)
    rated = pc.or_(review, pc.fill_null(pc.equal(kinds, C.EVENT_RATE), False))
    low = pc.fill_null(pc.and_(rated, pc.less_equal(ratings, rule.max_rating)), False)
    middling = pc.fill_null(pc.and_(review, pc.less_equal(ratings, rule.review_text_max_rating)), False)
    middling = pc.and_(middling, pc.invert(low))
    said = [wanted and is_negative_text(text) for wanted, text in zip(middling.to_pylist(), texts.to_pylist())]
    return pc.or_(low, pa.array(said, pa.bool_()))


def counted(rows: Rows) -> Rows:
    """``COUNTS`` of ``HISTORY_ROWS``: each user's events and reviews, one row per user and Arrow batch.

    A user whose rows span batches has several rows: their sums are the counts.
    """
    return map_in_arrow(rows, _counts_of, _COUNTS)


def _counts_of(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor function: ``HISTORY_ROWS`` batches in, ``COUNTS`` out (``counted``)."""
    schema = arrow_schema(_COUNTS)
    for batch in batches:
        kinds = batch.column(C.COL_EVENT_TYPE)
        ones = pa.table({C.COL_USER_ID: batch.column(C.COL_USER_ID), "event_count": pc.is_valid(kinds).cast(pa.int64()),
                         "review_count": pc.is_null(kinds).cast(pa.int64())})
        sums = ones.group_by(C.COL_USER_ID, use_threads=False).aggregate([("event_count", "sum"), ("review_count", "sum")])
        yield from pa.Table.from_arrays([sums.column(C.COL_USER_ID), sums.column("event_count_sum"),
                                         sums.column("review_count_sum")], schema=schema).to_batches()


def resolve_vectors(read: Reader, encoder_version: str, versions: Mapping[str, int], refs: Rows) -> Rows:
    """Attaches each reference's embedding; references without one are left out.

    The text's vector when ``text_hash`` is set, else the item's vector. Entries
    of unknown items or of texts not encoded yet have no vector and no weight.
    Every other column of ``refs`` is kept. Two lookups: joins in the JVM on Spark.
    """
    of_version = [(C.COL_ENCODER_VERSION, "=", encoder_version)]
    by_item = read.lookup(read.where(refs, [(C.COL_TEXT_HASH, "null", None)]), C.ITEM_EMBEDDINGS,
                          versions[C.ITEM_EMBEDDINGS], C.COL_ITEM_ID, [C.COL_EMBEDDING], of_version, how="inner")
    by_text = read.lookup(read.where(refs, [(C.COL_TEXT_HASH, "not null", None)]), C.TEXT_EMBEDDINGS,
                          versions[C.TEXT_EMBEDDINGS], C.COL_TEXT_HASH, [C.COL_EMBEDDING], of_version, how="inner")
    return read.union([by_item, by_text])


def stored_refs(rows: Rows) -> Rows:
    """The references stored in ``user_interests.recent`` of ``rows`` (user_id, recent), one row each,
    with ``recency`` (1 = newest): ``STORED_REFS``, by one Arrow function."""
    return map_in_arrow(rows.select([C.COL_USER_ID, "recent"]), _exploded, _STORED_REFS)


def _exploded(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor function: (user_id, recent) batches in, ``STORED_REFS`` out (``stored_refs``)."""
    import numpy as np

    schema = arrow_schema(_STORED_REFS)
    for batch in batches:
        recent = batch.column("recent")
        owner = pc.list_parent_indices(recent)
        refs = pc.list_flatten(recent)
        parents = owner.to_numpy()
        # Position in its list: the row's index less that of its list's first entry (owners ascend).
        recency = np.arange(len(parents)) - np.searchsorted(parents, parents, side="left") + 1
        fields = dict(zip([field.name for field in refs.type], refs.flatten()))
        columns = [batch.column(C.COL_USER_ID).take(owner), *(fields[name] for name in REF_COLUMNS),
                   pa.array(recency, pa.int32())]
        yield pa.RecordBatch.from_arrays([c.cast(f.type) for c, f in zip(columns, schema)], schema=schema)


def entry_order(ts_micros: int, kind: str, item_id: str | None, label: str | None, digest: str | None) -> tuple:
    """Sort key putting a user's history entries newest first, in one total order.

    Ties in time are broken by kind, item (nulls last), label and text hash
    (nulls first), so that every run, full or incremental, picks and orders the
    same entries whatever order they arrive in.
    """
    return (-ts_micros, kind, item_id is None, item_id or "", label is not None, label or "",
            digest is not None, digest or "")
