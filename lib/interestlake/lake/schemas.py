"""Declared schemas and keys of every lake table (DESIGN.md section 3).

The schema here is the contract: writers cast to it, readers read with it, and
the Delta table is created from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import types as T

from interestlake import constants as C

# Element nullability is not enforced by Parquet readers, so declaring it would only break casts.
_VECTOR = T.ArrayType(T.FloatType(), containsNull=True)
# A history entry by reference (see interestlake.pipeline.history): user_interests keeps
# each user's last N, so a refresh never re-reads the history to find them.
HISTORY_REF = T.StructType(
    [
        T.StructField(C.COL_TS, T.TimestampType()),
        T.StructField("kind", T.StringType()),
        T.StructField(C.COL_ITEM_ID, T.StringType()),
        T.StructField(C.COL_TEXT_HASH, T.StringType()),
        T.StructField("label", T.StringType()),
    ]
)
# Columns that identify a user or hold what they wrote (a reason quotes their searches, a
# topic is a phrase of their texts):
# no min/max statistics of them
# are written to the Delta log (it outlives vacuum, and `forget` must leave nothing);
# files are not sorted by user, so such statistics would prune nothing anyway.
PERSONAL_COLUMNS = frozenset({C.COL_USER_ID, C.COL_TEXT, C.COL_REASON, "raw", "label", C.COL_TOPIC})
_PROVENANCE = [
    T.StructField("source", T.StringType()),
    T.StructField(C.COL_RUN_ID, T.StringType()),
    T.StructField("ingested_at", T.TimestampType()),
]


@dataclass(frozen=True)
class TableSpec:
    """One lake table: its name, Spark schema and primary key columns."""

    name: str
    schema: T.StructType
    keys: tuple[str, ...]
    description: str

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


def _fields(*fields: T.StructField) -> T.StructType:
    return T.StructType(list(fields))


def _f(name: str, dtype: T.DataType, nullable: bool = True) -> T.StructField:
    return T.StructField(name, dtype, nullable)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in [
        TableSpec(
            C.EVENTS,
            _fields(
                _f(C.COL_EVENT_ID, T.StringType(), False),
                _f(C.COL_USER_ID, T.StringType(), False),
                _f(C.COL_ITEM_ID, T.StringType()),
                _f(C.COL_EVENT_TYPE, T.StringType(), False),
                _f(C.COL_TS, T.TimestampType(), False),
                _f(C.COL_TEXT, T.StringType()),
                _f(C.COL_RATING, T.DoubleType()),
                _f(C.COL_TRUNCATED, T.BooleanType()),
                *_PROVENANCE,
            ),
            (C.COL_EVENT_ID,),
            "accepted behaviour events",
        ),
        TableSpec(
            C.REVIEWS,
            _fields(
                _f(C.COL_REVIEW_ID, T.StringType(), False),
                _f(C.COL_USER_ID, T.StringType(), False),
                _f(C.COL_ITEM_ID, T.StringType(), False),
                _f(C.COL_RATING, T.DoubleType(), False),
                _f(C.COL_TEXT, T.StringType()),
                _f(C.COL_TS, T.TimestampType(), False),
                _f(C.COL_TRUNCATED, T.BooleanType()),
                *_PROVENANCE,
            ),
            (C.COL_REVIEW_ID,),
            "accepted reviews and other user-written content",
        ),
        TableSpec(
            C.ITEMS,
            _fields(
                _f(C.COL_ITEM_ID, T.StringType(), False),
                _f(C.COL_TITLE, T.StringType(), False),
                _f(C.COL_DESCRIPTION, T.StringType()),
                _f(C.COL_CATEGORY, T.StringType()),
                _f(C.COL_PRICE, T.DoubleType()),
                _f(C.COL_UPDATED_AT, T.TimestampType()),
                _f(C.COL_TRUNCATED, T.BooleanType()),
                *_PROVENANCE,
            ),
            (C.COL_ITEM_ID,),
            "latest catalog row per item",
        ),
        TableSpec(
            C.QUARANTINE,
            _fields(
                _f("source", T.StringType(), False),
                _f(C.COL_RUN_ID, T.StringType(), False),
                _f("row_no", T.LongType(), False),
                _f("kind", T.StringType(), False),
                _f("reason", T.StringType(), False),
                _f("detail", T.StringType()),
                _f("raw", T.StringType()),
                _f("quarantined_at", T.TimestampType(), False),
            ),
            ("source", C.COL_RUN_ID, "row_no"),
            "rejected input rows with a reason code",
        ),
        TableSpec(
            C.TEXT_EMBEDDINGS,
            _fields(
                _f(C.COL_TEXT_HASH, T.StringType(), False),
                _f(C.COL_ENCODER_VERSION, T.StringType(), False),
                _f(C.COL_TEXT, T.StringType(), False),
                _f(C.COL_EMBEDDING, _VECTOR, False),
                _f(C.COL_RUN_ID, T.StringType()),
                _f("encoded_at", T.TimestampType()),
            ),
            (C.COL_TEXT_HASH, C.COL_ENCODER_VERSION),
            "embedding cache: a text is encoded once per encoder version",
        ),
        TableSpec(
            C.ITEM_EMBEDDINGS,
            _fields(
                _f(C.COL_ITEM_ID, T.StringType(), False),
                _f(C.COL_ENCODER_VERSION, T.StringType(), False),
                _f(C.COL_TEXT_HASH, T.StringType(), False),
                _f(C.COL_EMBEDDING, _VECTOR, False),
                _f(C.COL_RUN_ID, T.StringType()),
                _f(C.COL_UPDATED_AT, T.TimestampType()),
            ),
            (C.COL_ITEM_ID, C.COL_ENCODER_VERSION),
            "item vectors",
        ),
        TableSpec(
            C.USER_INTERESTS,
            _fields(
                _f(C.COL_USER_ID, T.StringType(), False),
                _f(C.COL_ENCODER_VERSION, T.StringType(), False),
                _f("long_term", _VECTOR, False),
                _f("short_term", _VECTOR, False),
                _f("interest", _VECTOR, False),
                # Running statistics of the long-term vector, decayed to last_event_at:
                # new entries are folded in without reading the old history.
                _f("decayed_sum", T.ArrayType(T.DoubleType()), False),
                _f("decayed_mass", T.DoubleType(), False),
                _f("event_count", T.LongType(), False),
                _f("review_count", T.LongType(), False),
                _f("last_event_at", T.TimestampType(), False),
                # The last N history entries (newest first) behind short_term and the reasons.
                _f("recent", T.ArrayType(HISTORY_REF), False),
                _f(C.COL_RUN_ID, T.StringType()),
                _f(C.COL_UPDATED_AT, T.TimestampType()),
            ),
            (C.COL_USER_ID, C.COL_ENCODER_VERSION),
            "long-term and short-term interest vectors per user",
        ),
        TableSpec(
            C.RECOMMENDATIONS,
            _fields(
                _f(C.COL_USER_ID, T.StringType(), False),
                _f(C.COL_RANK, T.IntegerType(), False),
                _f(C.COL_ITEM_ID, T.StringType(), False),
                _f(C.COL_SCORE, T.DoubleType(), False),
                _f(C.COL_REASON, T.StringType()),
                _f(C.COL_RUN_ID, T.StringType()),
                _f("generated_at", T.TimestampType()),
            ),
            (C.COL_USER_ID, C.COL_RANK),
            "top-K recommendations per user",
        ),
        TableSpec(
            C.USER_TOPICS,
            _fields(
                _f(C.COL_USER_ID, T.StringType(), False),
                _f(C.COL_TOPIC, T.StringType(), False),
                # Share of the user's decayed phrase mass (a user's weights sum to 1).
                _f(C.COL_WEIGHT, T.DoubleType(), False),
                # The phrases grouped under the topic, heaviest first.
                _f("phrases", T.ArrayType(T.StringType())),
                _f("mentions", T.LongType()),
                # Newest text of the user naming the topic.
                _f("last_seen", T.TimestampType()),
                _f(C.COL_RUN_ID, T.StringType()),
                _f(C.COL_UPDATED_AT, T.TimestampType()),
            ),
            (C.COL_USER_ID, C.COL_TOPIC),
            "interest topics per user from their reviews and queries",
        ),
        TableSpec(
            C.PIPELINE_RUNS,
            _fields(
                _f(C.COL_RUN_ID, T.StringType(), False),
                _f("stage", T.StringType(), False),
                _f("logical_date", T.TimestampType(), False),
                _f("status", T.StringType(), False),
                # Digest of the stage's parameters: progress is only reused under the same ones.
                _f("params", T.StringType()),
                _f("started_at", T.TimestampType()),
                _f("finished_at", T.TimestampType()),
                _f("counts", T.MapType(T.StringType(), T.LongType())),
                _f("read_versions", T.MapType(T.StringType(), T.LongType())),
                _f("written_versions", T.MapType(T.StringType(), T.LongType())),
                _f("note", T.StringType()),
            ),
            (C.COL_RUN_ID, "stage"),
            "one row per run and stage: counts and the table versions read and written",
        ),
        TableSpec(
            C.LANDING_FILES,
            _fields(
                _f("source", T.StringType(), False),
                # SHA-256 of the file's bytes as stored (compressed or not).
                _f("content_hash", T.StringType(), False),
                _f("kind", T.StringType(), False),
                _f("size", T.LongType()),
                _f("modified_at", T.TimestampType()),
                # ingested: its rows went to their tables and quarantine; held: a file-level
                # problem (reason) kept all of it out, and a changed file is read again.
                _f("status", T.StringType(), False),
                _f(C.COL_REASON, T.StringType()),
                _f(C.COL_RUN_ID, T.StringType()),
                _f("recorded_at", T.TimestampType()),
            ),
            ("source", "content_hash"),
            "every landing file version ingest read: ingested, or held for a retry when it changes",
        ),
    ]
}


def table_spec(name: str) -> TableSpec:
    """Looks up a table by name, with the list of valid names on a miss."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown lake table {name!r}; tables are {sorted(TABLES)}") from None


_ARROW_TYPES = {
    T.StringType: pa.string(),
    T.LongType: pa.int64(),
    T.IntegerType: pa.int32(),
    T.DoubleType: pa.float64(),
    T.FloatType: pa.float32(),
    T.BooleanType: pa.bool_(),
    T.DateType: pa.date32(),
    # Delta's `timestamp` is UTC-adjusted microseconds, which is what Spark writes
    # with spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS.
    T.TimestampType: pa.timestamp("us", tz="UTC"),
}


def arrow_type(dtype: T.DataType) -> pa.DataType:
    """Arrow type of a Spark type, for creating the Delta schema with delta-rs."""
    if isinstance(dtype, T.MapType):
        return pa.map_(arrow_type(dtype.keyType), pa.field("value", arrow_type(dtype.valueType), nullable=dtype.valueContainsNull))
    if isinstance(dtype, T.StructType):
        return pa.struct([pa.field(f.name, arrow_type(f.dataType), nullable=f.nullable) for f in dtype.fields])
    if isinstance(dtype, T.ArrayType):
        return pa.list_(pa.field("element", arrow_type(dtype.elementType), nullable=dtype.containsNull))
    try:
        return _ARROW_TYPES[type(dtype)]
    except KeyError:
        raise TypeError(f"no Delta mapping for Spark type {dtype.simpleString()}") from None


def arrow_schema(schema: T.StructType) -> pa.Schema:
    """Arrow schema of a Spark schema, nullability kept."""
    return pa.schema([pa.field(f.name, arrow_type(f.dataType), nullable=f.nullable) for f in schema.fields])
