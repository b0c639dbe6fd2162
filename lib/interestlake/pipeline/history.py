"""Texts to encode and each user's history, shared by the encode, interests and
recommend stages so that all three agree on what a text and a history entry are.

A history entry is first a *reference* (user_id, ts, kind, item_id, text_hash,
label): small enough to store (``user_interests.recent`` keeps each user's last
N) and to shuffle. ``resolve_vectors`` attaches the embedding: the text's vector
when the entry has a ``text_hash``, else the item's vector.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.models.feedback import NEGATIVE_TEXT_PATTERN, DislikeRule
from interestlake.pipeline.frames import Rows, map_in_arrow
from interestlake.pipeline.gather import ArrowReader, Reader, conform

# What identifies and orders an entry; the stored `recent` structs have these fields.
REF_COLUMNS = [C.COL_TS, "kind", C.COL_ITEM_ID, C.COL_TEXT_HASH, "label"]
REF_FIELDS = ", ".join(
    f"{name} {kind}" for name, kind in zip(REF_COLUMNS, ["timestamp", "string", "string", "string", "string"])
)
HISTORY_COLUMNS = [C.COL_USER_ID, *REF_COLUMNS, C.COL_EMBEDDING]
# What a gatherer of written texts hands over: search events and reviews, raw (a review's
# event_type is null); ``written_texts`` makes texts of them.
WRITTEN = pa.schema([(C.COL_USER_ID, pa.string()), (C.COL_TS, pa.timestamp("us", tz="UTC")),
                     (C.COL_EVENT_TYPE, pa.string()), (C.COL_TEXT, pa.string())])
_TEXTS = T.StructType([T.StructField(C.COL_TEXT_HASH, T.StringType()), T.StructField(C.COL_TEXT, T.StringType())])
_REF_SCHEMA = pa.schema([(C.COL_USER_ID, pa.string()), (C.COL_TS, pa.timestamp("us", tz="UTC")), ("kind", pa.string()),
                         (C.COL_ITEM_ID, pa.string()), (C.COL_TEXT_HASH, pa.string()), ("label", pa.string())])


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


def query_texts_on_driver(events: pa.Table) -> list[tuple]:
    """``query_texts`` on the driver: (user_id, ts, text) of search events with text.

    ``events`` needs user_id, ts, event_type and text.
    """
    import pyarrow.compute as pc

    # Filtered in Arrow first: a user's whole history is mostly item events, and turning every
    # row into Python objects made this the slowest part of a small batch as histories grew.
    searches = events.filter(pc.fill_null(pc.equal(events.column(C.COL_EVENT_TYPE), C.EVENT_SEARCH), False))
    rows = zip(*(searches.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_TS, C.COL_TEXT)))
    queries = ((user, ts, clean_text(text)) for user, ts, text in rows)
    return [query for query in queries if query[2]]


def review_texts_on_driver(reviews: pa.Table) -> list[tuple]:
    """``review_texts`` on the driver: (user_id, item_id, ts, text) of reviews with text.

    ``reviews`` needs user_id, item_id, ts and text.
    """
    rows = zip(*(reviews.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, C.COL_TEXT)))
    written = ((user, item, ts, clean_text(text)) for user, item, ts, text in rows)
    return [review for review in written if review[3]]


def written_rows(read: Reader, now: Mapping[str, int], since: Mapping[str, int] | None = None,
                 users: Rows | None = None) -> Rows:
    """``WRITTEN`` rows: those written after ``since`` (the new ones), or the whole history of ``users`` (None: everyone)."""
    columns = {C.EVENTS: [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_TEXT], C.REVIEWS: [C.COL_USER_ID, C.COL_TS, C.COL_TEXT]}
    where = {C.EVENTS: [(C.COL_EVENT_TYPE, "=", C.EVENT_SEARCH)], C.REVIEWS: []}
    if since is not None:
        parts = [read.changed(t, since[t], now[t], columns[t], where[t]) for t in (C.EVENTS, C.REVIEWS)]
    else:
        parts = [read.of_users(t, now[t], columns[t], users, where[t]) for t in (C.EVENTS, C.REVIEWS)]
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


def history_refs_on_driver(lake: LakeTables, versions: Mapping[str, int], events: pa.Table, reviews: pa.Table) -> pa.Table:
    """``history_refs`` of a small batch, on the driver (without a dislike rule).

    ``events`` and ``reviews`` need user_id, ts, item_id, text (and event_type).
    """
    event_rows = zip(*(events.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_ITEM_ID)))
    refs = [(user, ts, kind, item, None, None) for user, ts, kind, item in event_rows if item is not None]
    refs += [(user, ts, C.EVENT_SEARCH, None, text_digest(text), text) for user, ts, text in query_texts_on_driver(events)]
    review_rows = zip(*(reviews.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_TS, C.COL_ITEM_ID)))
    refs += [(user, ts, C.EVENT_REVIEW, item, None, None) for user, ts, item in review_rows]
    refs += [(user, ts, C.EVENT_REVIEW, item, text_digest(text), None) for user, item, ts, text in review_texts_on_driver(reviews)]
    items = sorted({ref[3] for ref in refs if ref[3] is not None})
    titles = lake.read_arrow(C.ITEMS, [C.COL_ITEM_ID, C.COL_TITLE], ds.field(C.COL_ITEM_ID).isin(_strings(items)), versions[C.ITEMS])
    title = dict(zip(titles.column(C.COL_ITEM_ID).to_pylist(), titles.column(C.COL_TITLE).to_pylist()))
    # Entries about an item are labelled with its title; searches with their query.
    labelled = [ref if ref[3] is None else (*ref[:5], title.get(ref[3])) for ref in refs]
    return pa.Table.from_pylist([dict(zip([C.COL_USER_ID, *REF_COLUMNS], ref)) for ref in labelled], schema=_REF_SCHEMA)


def resolve_vectors_on_driver(lake: LakeTables, encoder_version: str, versions: Mapping[str, int], refs: pa.Table) -> pa.Table:
    """``resolve_vectors`` on the driver: ``refs`` with their ``embedding``; references without one are left out."""
    import pyarrow.compute as pc

    def vectors(table: str, key: str, wanted: pa.Array) -> tuple[dict, pa.Array]:
        """Row of each key among the vectors found, and those vectors."""
        found = lake.read_arrow(
            table, [key, C.COL_EMBEDDING],
            (ds.field(C.COL_ENCODER_VERSION) == encoder_version) & ds.field(key).isin(pc.unique(pc.drop_null(wanted))),
            versions[table],
        )
        return {k: i for i, k in enumerate(found.column(key).to_pylist())}, found.column(C.COL_EMBEDDING).combine_chunks()

    by_text = pc.is_valid(refs.column(C.COL_TEXT_HASH))
    parts = []
    for table, key, rows in ((C.ITEM_EMBEDDINGS, C.COL_ITEM_ID, refs.filter(pc.invert(by_text))),
                             (C.TEXT_EMBEDDINGS, C.COL_TEXT_HASH, refs.filter(by_text))):
        position, embeddings = vectors(table, key, rows.column(key).combine_chunks())
        at = [position.get(k) for k in rows.column(key).to_pylist()]
        rows = rows.filter(pa.array([i is not None for i in at], pa.bool_()))
        parts.append(rows.append_column(C.COL_EMBEDDING, embeddings.take(pa.array([i for i in at if i is not None], pa.int64()))))
    return pa.concat_tables(parts)


def stored_refs_on_driver(interests: pa.Table) -> pa.Table:
    """``stored_refs`` on the driver: the references in ``user_interests.recent``, with ``recency`` (1 = newest)."""
    rows = [
        {C.COL_USER_ID: user, **ref, "recency": recency}
        for user, recent in zip(interests.column(C.COL_USER_ID).to_pylist(), interests.column("recent").to_pylist())
        for recency, ref in enumerate(recent or [], start=1)
    ]
    return pa.Table.from_pylist(rows, schema=_REF_SCHEMA.append(pa.field("recency", pa.int32())))


def lists_per_user(users: list[str], rows: pa.Table, columns: list[str]) -> dict[str, pa.Array]:
    """``collect_list`` per user on the driver: for each column, one list per user of ``users``.

    Each list keeps the order the user's rows have in ``rows``; a user without rows
    gets null, as a left join of Spark's grouped lists gives.
    """
    import numpy as np

    position = {user: i for i, user in enumerate(users)}
    owner = np.array([position[user] for user in rows.column(C.COL_USER_ID).to_pylist()], dtype=np.int64)
    rows = rows.take(pa.array(np.argsort(owner, kind="stable")))
    counts = np.bincount(owner, minlength=len(users))
    offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
    empty = pa.array(counts == 0)
    return {name: pa.ListArray.from_arrays(offsets, rows.column(name).combine_chunks(), mask=empty) for name in columns}


def _strings(values) -> pa.Array:
    """Values for ``isin``: typed even when empty."""
    return pa.array(list(values), pa.string())


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


def entry_kind(kind: Column, dislike: DislikeRule | None, rated: Column, text: bool = False) -> Column:
    """An entry's kind: ``dislike`` for a rated entry the rule counts against its item, else ``kind``."""
    if dislike is None:
        return kind.alias("kind")
    rating = F.col(C.COL_RATING)
    low = rated & (rating <= dislike.max_rating)
    if text:
        low = low | ((rating <= dislike.review_text_max_rating) & F.col(C.COL_TEXT).rlike(NEGATIVE_TEXT_PATTERN))
    return F.when(low.isNotNull() & low, F.lit(C.EVENT_DISLIKE)).otherwise(kind).alias("kind")


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


def history_refs(
    lake: LakeTables, versions: Mapping[str, int], events: DataFrame, reviews: DataFrame, dislike: DislikeRule | None = None
) -> DataFrame:
    """History entry references (user_id, ts, kind, item_id, text_hash, label) of some events and reviews.

    An item event refers to its item; a search to its query text; a review to
    both its item and its text (two entries). ``label`` is the item's title or
    the query text, for reasons. With a ``dislike`` rule, low-rated ``rate`` events
    and reviews (both entries) get the kind ``dislike`` (a negative weight).
    """
    titles = lake.read(C.ITEMS, versions[C.ITEMS]).select(C.COL_ITEM_ID, F.col(C.COL_TITLE).alias("label"))
    no_text = F.lit(None).cast("string").alias(C.COL_TEXT_HASH)
    item_events = events.filter(F.col(C.COL_ITEM_ID).isNotNull()).select(
        C.COL_USER_ID, C.COL_TS, entry_kind(F.col(C.COL_EVENT_TYPE), dislike, F.col(C.COL_EVENT_TYPE) == C.EVENT_RATE),
        C.COL_ITEM_ID, no_text,
    )
    reviews = reviews.withColumn("kind", entry_kind(F.lit(C.EVENT_REVIEW), dislike, F.lit(True), text=True))
    reviewed_items = reviews.select(C.COL_USER_ID, C.COL_TS, "kind", C.COL_ITEM_ID, no_text)
    written = review_texts(reviews, "kind").select(
        C.COL_USER_ID, C.COL_TS, "kind", C.COL_ITEM_ID,
        text_hash(F.col(C.COL_TEXT)).alias(C.COL_TEXT_HASH),
    )
    about_items = item_events.unionByName(reviewed_items).unionByName(written).join(
        F.broadcast(titles), C.COL_ITEM_ID, "left"
    )
    searched = query_texts(events).select(
        C.COL_USER_ID, C.COL_TS, F.lit(C.EVENT_SEARCH).alias("kind"),
        F.lit(None).cast("string").alias(C.COL_ITEM_ID),
        text_hash(F.col(C.COL_TEXT)).alias(C.COL_TEXT_HASH), F.col(C.COL_TEXT).alias("label"),
    )
    return about_items.select(C.COL_USER_ID, *REF_COLUMNS).unionByName(searched.select(C.COL_USER_ID, *REF_COLUMNS))


def resolve_vectors(lake: LakeTables, encoder_version: str, versions: Mapping[str, int], refs: DataFrame) -> DataFrame:
    """Attaches each reference's embedding; references without one are left out.

    The text's vector when ``text_hash`` is set, else the item's vector. Entries
    of unknown items or of texts not encoded yet have no vector and no weight.
    Every other column of ``refs`` is kept.
    """
    of_version = F.col(C.COL_ENCODER_VERSION) == encoder_version
    item_vectors = (
        lake.read(C.ITEM_EMBEDDINGS, versions[C.ITEM_EMBEDDINGS]).filter(of_version).select(C.COL_ITEM_ID, C.COL_EMBEDDING)
    )
    text_vectors = (
        lake.read(C.TEXT_EMBEDDINGS, versions[C.TEXT_EMBEDDINGS]).filter(of_version).select(C.COL_TEXT_HASH, C.COL_EMBEDDING)
    )
    columns = refs.columns
    by_item = refs.filter(F.col(C.COL_TEXT_HASH).isNull()).join(item_vectors, C.COL_ITEM_ID)
    by_text = refs.filter(F.col(C.COL_TEXT_HASH).isNotNull()).join(text_vectors, C.COL_TEXT_HASH)
    return by_item.select(*columns, C.COL_EMBEDDING).unionByName(by_text.select(*columns, C.COL_EMBEDDING))


def user_history(
    lake: LakeTables, encoder_version: str, versions: Mapping[str, int], users: DataFrame | None = None,
    dislike: DislikeRule | None = None,
) -> DataFrame:
    """The whole embedded history (HISTORY_COLUMNS) of every user, or of some users.

    Args:
        lake: Table layer.
        encoder_version: Which vectors to use.
        versions: Table versions to read, so a stage reads one consistent set of inputs.
        users: A DataFrame of ``user_id`` to restrict to; events and reviews are
            filtered to them before any join, so the cost follows their history
            plus one scan of the id columns.
        dislike: Marks low-rated entries as dislikes (``history_refs``).
    """
    def read(table: str) -> DataFrame:
        rows = lake.read(table, versions[table])
        # Broadcast: the users are few, the history is large and must not be shuffled.
        return rows if users is None else rows.join(F.broadcast(users), C.COL_USER_ID, "left_semi")

    refs = history_refs(lake, versions, read(C.EVENTS), read(C.REVIEWS), dislike)
    return resolve_vectors(lake, encoder_version, versions, refs)


def stored_refs(interests: DataFrame, column: str = "recent") -> DataFrame:
    """The references stored in ``user_interests.recent``, one row each, with ``recency`` (1 = newest)."""
    return interests.select(C.COL_USER_ID, F.posexplode(column).alias("recency", "_ref")).select(
        C.COL_USER_ID, (F.col("recency") + 1).alias("recency"), *[F.col(f"_ref.{c}").alias(c) for c in REF_COLUMNS]
    )


def entry_order(ts_micros: int, kind: str, item_id: str | None, label: str | None, digest: str | None) -> tuple:
    """Sort key putting a user's history entries newest first, in one total order.

    Ties in time are broken by kind, item (nulls last), label and text hash
    (nulls first), so that every run, full or incremental, picks and orders the
    same entries whatever order they arrive in.
    """
    return (-ts_micros, kind, item_id is None, item_id or "", label is not None, label or "",
            digest is not None, digest or "")
