"""Texts to encode and each user's embedded history, shared by the encode,
interests and recommend stages so that all three agree on what a text is."""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.tables import LakeTables


HISTORY_COLUMNS = [C.COL_USER_ID, C.COL_TS, "kind", C.COL_ITEM_ID, "label", C.COL_EMBEDDING]


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


def query_texts(events: DataFrame) -> DataFrame:
    """Search queries: (user_id, ts, text) of search events with text."""
    return (
        events.filter(F.col(C.COL_EVENT_TYPE) == C.EVENT_SEARCH)
        .select(C.COL_USER_ID, C.COL_TS, _clean(C.COL_TEXT).alias(C.COL_TEXT))
        .filter(F.col(C.COL_TEXT).isNotNull())
    )


def review_texts(reviews: DataFrame) -> DataFrame:
    """Review texts: (user_id, item_id, ts, text) of reviews with text."""
    return reviews.select(C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS, _clean(C.COL_TEXT).alias(C.COL_TEXT)).filter(
        F.col(C.COL_TEXT).isNotNull()
    )


def texts_to_encode(lake: LakeTables, now: Mapping[str, int], since: Mapping[str, int] | None = None) -> DataFrame:
    """Distinct texts that may need an embedding: (text_hash, text).

    Item texts come from the whole catalog (its size, not the history's); review
    and query texts only from rows written after ``since`` (all when None).
    """
    since = since or {}
    items = lake.read(C.ITEMS, now[C.ITEMS]).select(item_text().alias(C.COL_TEXT))
    reviews = review_texts(lake.changes(C.REVIEWS, since.get(C.REVIEWS), now[C.REVIEWS])).select(C.COL_TEXT)
    queries = query_texts(lake.changes(C.EVENTS, since.get(C.EVENTS), now[C.EVENTS])).select(C.COL_TEXT)
    texts = items.unionByName(reviews).unionByName(queries).filter(F.length(C.COL_TEXT) > 0)
    return texts.select(text_hash(F.col(C.COL_TEXT)).alias(C.COL_TEXT_HASH), C.COL_TEXT).dropDuplicates(
        [C.COL_TEXT_HASH]
    )


def user_history(
    lake: LakeTables,
    encoder_version: str,
    versions: Mapping[str, int] | None = None,
    events: DataFrame | None = None,
    reviews: DataFrame | None = None,
) -> DataFrame:
    """Embedded history entries of users.

    Columns: user_id, ts, kind (event type or ``review``), item_id (null for
    searches), label (item title or query text, for reasons), embedding. Item
    events use the item's vector; searches and review texts use the text's
    vector; a review contributes both its item and its text. Entries without an
    embedding (unknown items, texts not encoded yet) are left out.

    Args:
        lake: Table layer.
        encoder_version: Which vectors to use.
        versions: Table versions to read (latest when absent), so that a stage
            reads one consistent set of inputs.
        events: Events to turn into entries (default: the whole ``events`` table).
        reviews: Reviews to turn into entries (default: the whole ``reviews`` table).
    """
    versions = versions or {}

    def read(table: str) -> DataFrame:
        return lake.read(table, versions.get(table))

    version = F.col(C.COL_ENCODER_VERSION) == encoder_version
    item_vectors = read(C.ITEM_EMBEDDINGS).filter(version).select(C.COL_ITEM_ID, C.COL_EMBEDDING)
    titles = read(C.ITEMS).select(C.COL_ITEM_ID, F.col(C.COL_TITLE).alias("label"))
    text_vectors = read(C.TEXT_EMBEDDINGS).filter(version).select(C.COL_TEXT_HASH, C.COL_EMBEDDING)
    events = read(C.EVENTS) if events is None else events
    reviews = read(C.REVIEWS) if reviews is None else reviews

    def with_item_vector(df: DataFrame) -> DataFrame:
        return df.join(item_vectors, C.COL_ITEM_ID).join(titles, C.COL_ITEM_ID, "left")

    item_events = with_item_vector(
        events.filter(F.col(C.COL_ITEM_ID).isNotNull()).select(
            C.COL_USER_ID, C.COL_TS, F.col(C.COL_EVENT_TYPE).alias("kind"), C.COL_ITEM_ID
        )
    )
    reviewed_items = with_item_vector(
        reviews.select(C.COL_USER_ID, C.COL_TS, F.lit(C.EVENT_REVIEW).alias("kind"), C.COL_ITEM_ID)
    )
    written = (
        review_texts(reviews)
        .join(titles, C.COL_ITEM_ID, "left")
        .select(
            C.COL_USER_ID, C.COL_TS, F.lit(C.EVENT_REVIEW).alias("kind"), C.COL_ITEM_ID, "label",
            text_hash(F.col(C.COL_TEXT)).alias(C.COL_TEXT_HASH),
        )
        .join(text_vectors, C.COL_TEXT_HASH)
    )
    searched = (
        query_texts(events)
        .select(
            C.COL_USER_ID, C.COL_TS, F.lit(C.EVENT_SEARCH).alias("kind"),
            F.lit(None).cast("string").alias(C.COL_ITEM_ID), F.col(C.COL_TEXT).alias("label"),
            text_hash(F.col(C.COL_TEXT)).alias(C.COL_TEXT_HASH),
        )
        .join(text_vectors, C.COL_TEXT_HASH)
    )
    return (
        item_events.select(*HISTORY_COLUMNS)
        .unionByName(reviewed_items.select(*HISTORY_COLUMNS))
        .unionByName(written.select(*HISTORY_COLUMNS))
        .unionByName(searched.select(*HISTORY_COLUMNS))
    )


def history_of_users(lake: LakeTables, encoder_version: str, versions: Mapping[str, int], users: DataFrame) -> DataFrame:
    """The whole embedded history of some users (a DataFrame of ``user_id``).

    Events and reviews are filtered to those users before the vector joins, so
    the cost follows their history, plus one scan of the id columns.
    """
    def of_users(table: str) -> DataFrame:
        # Broadcast: the changed users are few, the history is large and must not be shuffled.
        return lake.read(table, versions[table]).join(F.broadcast(users), C.COL_USER_ID, "left_semi")

    return user_history(lake, encoder_version, versions, events=of_users(C.EVENTS), reviews=of_users(C.REVIEWS))


def recent_entries(history: DataFrame, last_n: int) -> DataFrame:
    """Each user's last N history entries, with ``recency`` = 1 for the newest.

    Ties in time are broken by kind, item and label so that every run (full or
    incremental) picks and orders the same entries.
    """
    newest_first = Window.partitionBy(C.COL_USER_ID).orderBy(
        F.col(C.COL_TS).desc(), F.col("kind"), F.col(C.COL_ITEM_ID).asc_nulls_last(), F.col("label")
    )
    return history.withColumn("recency", F.row_number().over(newest_first)).filter(F.col("recency") <= last_n)
