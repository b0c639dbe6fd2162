"""Reading a stage's raw rows: one interface, with a Spark and an Arrow implementation.

The seam between the engines. In a stage's gather, the reader only puts rows together:
the rows written between two versions, a set of users' rows, each user's rows
consecutive. What derives from them (texts, topics, needs...) is computed by one
function over Arrow record batches per stage, which runs on the executors for
``SparkReader``'s DataFrames and on the driver for ``ArrowReader``'s tables
(``interestlake.pipeline.frames.map_in_arrow``). ``driver_path`` in
``interestlake.pipeline.run`` picks the reader.

Row filters are written once, as (column, op, value) triples, and become a Spark
column or a pyarrow dataset expression.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.tables import LakeTables

# A row filter: (column, "=", value), (column, "in", values) or (column, "not null", None).
Where = Sequence[tuple[str, str, Any]]
_OPS = ("=", "in", "not null")


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` as a gatherer's declared ``schema``: its columns, in order, cast (a clear error when one is missing)."""
    missing = [name for name in schema.names if name not in batch.schema.names]
    if missing:
        raise ValueError(f"gathered rows lack column(s) {missing}; declared: {schema.names}")
    return pa.RecordBatch.from_arrays([batch.column(name).cast(schema.field(name).type) for name in schema.names],
                                      schema=schema)


def per_user(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.Table]:
    """Each user's rows as one table (``schema``), from batches in which each user's rows are consecutive.

    A user's rows may span batches (``by_user`` keeps them together, not within one batch).
    """
    pending: list[pa.RecordBatch] = []
    for batch in batches:
        batch = conform(batch, schema)
        users = batch.column(C.COL_USER_ID).to_pylist()
        starts = [i for i in range(len(users)) if i == 0 or users[i] != users[i - 1]]
        for start, end in zip(starts, [*starts[1:], len(users)]):
            if pending and pending[0].column(C.COL_USER_ID)[0].as_py() != users[start]:
                yield pa.Table.from_batches(pending, schema=schema)
                pending = []
            pending.append(batch.slice(start, end - start))
    if pending:
        yield pa.Table.from_batches(pending, schema=schema)


def _checked(where: Where) -> Where:
    for column, op, _ in where:
        if op not in _OPS:
            raise ValueError(f"unknown filter op {op!r} on {column!r}; ops are {list(_OPS)}")
    return where


class SparkReader:
    """Raw rows as Spark DataFrames (large batches, full runs)."""

    def __init__(self, lake: LakeTables):
        self.lake = lake

    def changed(self, table: str, since: int | None, until: int, columns: list[str], where: Where = (),
                identity: Sequence[str] | None = None) -> DataFrame:
        """Some columns of the rows written after version ``since`` up to ``until`` (``lake.changes``, same ``identity``)."""
        return self._filtered(self.lake.changes(table, since, until, identity=identity), where).select(*columns)

    def of_users(self, table: str, version: int, columns: list[str], users: DataFrame | None, where: Where = (),
                 few: bool = True) -> DataFrame:
        """Some columns of the rows of ``users`` (a DataFrame of user_id; None: everyone) in one table version.

        ``few``: the users are few and the table large, so they are broadcast and the table is not shuffled.
        """
        rows = self._filtered(self.lake.read(table, version), where)
        if users is not None:
            rows = rows.join(F.broadcast(users) if few else users, C.COL_USER_ID, "left_semi")
        return rows.select(*columns)

    @staticmethod
    def union(parts: Sequence[DataFrame]) -> DataFrame:
        """The rows of every part; a column a part lacks is null there."""
        rows = parts[0]
        for part in parts[1:]:
            rows = rows.unionByName(part, allowMissingColumns=True)
        return rows

    @staticmethod
    def by_user(rows: DataFrame) -> DataFrame:
        """``rows`` with each user's rows consecutive in one partition."""
        return rows.repartition(C.COL_USER_ID).sortWithinPartitions(C.COL_USER_ID)

    @staticmethod
    def users(rows: DataFrame) -> DataFrame:
        """The distinct user_id of ``rows``."""
        return rows.select(C.COL_USER_ID).distinct()

    @staticmethod
    def distinct(rows: DataFrame) -> DataFrame:
        """``rows`` without repeats."""
        return rows.distinct()

    def absent_from(self, rows: DataFrame, table: str, key: str, where: Where = ()) -> DataFrame:
        """The rows of ``rows`` whose ``key`` is in no row of ``table`` (latest version) matching ``where``."""
        return rows.join(self._filtered(self.lake.read(table), where).select(key), key, "left_anti")

    @staticmethod
    def is_empty(rows: DataFrame) -> bool:
        """Whether ``rows`` has no row (a Spark job)."""
        return rows.isEmpty()

    @staticmethod
    def _filtered(rows: DataFrame, where: Where) -> DataFrame:
        for column, op, value in _checked(where):
            if op == "=":
                rows = rows.filter(F.col(column) == value)
            elif op == "in":
                rows = rows.filter(F.col(column).isin(list(value)))
            else:
                rows = rows.filter(F.col(column).isNotNull())
        return rows


class ArrowReader:
    """The same raw rows as Arrow tables read on the driver (a small batch; delta-rs backend only)."""

    def __init__(self, lake: LakeTables):
        self.lake = lake

    def changed(self, table: str, since: int, until: int, columns: list[str], where: Where = (),
                identity: Sequence[str] | None = None) -> pa.Table:
        """``SparkReader.changed`` (``lake.change_rows``)."""
        needed = list(dict.fromkeys([*columns, *(column for column, _, _ in where)]))
        rows = self.lake.change_rows(table, since, until, needed, identity=identity)
        return rows.filter(self._expression(where)).select(columns) if where else rows.select(columns)

    def of_users(self, table: str, version: int, columns: list[str], users: pa.Table | None, where: Where = (),
                 few: bool = True) -> pa.Table:
        """``SparkReader.of_users``, read with a filter on the users (``lake.read_arrow``; ``few`` always holds here)."""
        if users is None:
            raise ValueError("ArrowReader reads some users' rows, not a whole table; use SparkReader")
        wanted = ds.field(C.COL_USER_ID).isin(users.column(C.COL_USER_ID).combine_chunks().cast(pa.string()))
        return self.lake.read_arrow(table, columns, wanted & self._expression(where) if where else wanted, version)

    @staticmethod
    def union(parts: Sequence[pa.Table]) -> pa.Table:
        """``SparkReader.union``."""
        return pa.concat_tables(parts, promote_options="default")

    @staticmethod
    def by_user(rows: pa.Table) -> pa.Table:
        """``rows`` sorted by user (stable: each user's rows keep their order)."""
        return rows.take(pc.sort_indices(rows, [(C.COL_USER_ID, "ascending")]))

    @staticmethod
    def users(rows: pa.Table) -> pa.Table:
        """``SparkReader.users``, sorted."""
        return pa.table({C.COL_USER_ID: pc.unique(rows.column(C.COL_USER_ID).combine_chunks()).sort()})

    @staticmethod
    def distinct(rows: pa.Table) -> pa.Table:
        """``SparkReader.distinct``, sorted."""
        unique = rows.group_by(rows.column_names, use_threads=False).aggregate([]).select(rows.column_names)
        return unique.sort_by([(name, "ascending") for name in rows.column_names])

    def absent_from(self, rows: pa.Table, table: str, key: str, where: Where = ()) -> pa.Table:
        """``SparkReader.absent_from``: ``table`` is probed with the keys of ``rows`` only."""
        keys = pc.unique(rows.column(key).combine_chunks())
        wanted = ds.field(key).isin(keys)
        found = self.lake.read_arrow(table, [key], wanted & self._expression(where) if where else wanted)
        return rows.filter(pc.invert(pc.is_in(rows.column(key), value_set=found.column(key).combine_chunks())))

    @staticmethod
    def is_empty(rows: pa.Table) -> bool:
        """``SparkReader.is_empty``."""
        return rows.num_rows == 0

    @staticmethod
    def _expression(where: Where) -> ds.Expression:
        expression = None
        for column, op, value in _checked(where):
            field = ds.field(column)
            term = (field == value if op == "=" else field.isin(pa.array(list(value))) if op == "in"
                    else field.is_valid())
            expression = term if expression is None else expression & term
        return expression


Reader = SparkReader | ArrowReader


def reader(lake: LakeTables, on_driver: bool) -> Reader:
    """The reader of a stage's batch: ``on_driver`` is ``driver_path``'s answer."""
    return ArrowReader(lake) if on_driver else SparkReader(lake)
