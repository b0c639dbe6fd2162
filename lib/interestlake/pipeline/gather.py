"""Reading a stage's raw rows: one interface, with a Spark and an Arrow implementation.

The seam between the engines. In a stage's gather, the reader only puts rows together:
the rows written between two versions, a set of users' rows, each user's rows
consecutive, the rows of another table matched by key (``lookup``). What derives from them (texts, topics, needs...) is computed by one
function over Arrow record batches per stage, which runs on the executors for
``SparkReader``'s DataFrames and on the driver for ``ArrowReader``'s tables
(``interestlake.pipeline.frames.map_in_arrow``). ``driver_path`` in
``interestlake.pipeline.run`` picks the reader.

Row filters are written once, as (column, op, value) triples, and become a Spark
column or a pyarrow dataset expression.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.tables import LakeTables

# A row filter: (column, "=", value), (column, "in", values), (column, "null", None) or (column, "not null", None).
Where = Sequence[tuple[str, str, Any]]
_OPS = ("=", "in", "null", "not null")


def conform(batch: pa.RecordBatch, schema: pa.Schema, optional: Sequence[str] = ()) -> pa.RecordBatch:
    """``batch`` as a gatherer's declared ``schema``: its columns, in order, cast (a clear error when one is missing).

    A column named in ``optional`` may be missing: it is then null.
    """
    missing = [name for name in schema.names if name not in batch.schema.names]
    if set(missing) - set(optional):
        raise ValueError(f"gathered rows lack column(s) {missing}; declared: {schema.names}")
    return pa.RecordBatch.from_arrays(
        [pa.nulls(batch.num_rows, field.type) if field.name in missing else batch.column(field.name).cast(field.type)
         for field in schema], schema=schema)


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

    def where(self, rows: DataFrame, where: Where) -> DataFrame:
        """The rows of ``rows`` matching ``where``."""
        return self._filtered(rows, where)

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

    def lookup(self, rows: DataFrame, table: str, version: int | None, key: str, columns: list[str], where: Where = (),
               how: str = "left", small: bool = False, found: str | None = None) -> DataFrame:
        """``rows`` with ``columns`` of the row of ``table`` (matching ``where``) whose ``key`` is theirs.

        ``how``: "left" keeps every row (nulls where none matches), "inner" only matched rows.
        ``small``: the looked-up rows are few enough to broadcast (the catalog's titles), so
        ``rows`` are not shuffled. ``found``: a column true where a row matched, null elsewhere.
        The join runs in the JVM: vectors never pass through Python.
        """
        if how not in ("left", "inner"):
            raise ValueError(f"unknown lookup {how!r}; lookups are 'left' and 'inner'")
        looked = self._filtered(self.lake.read(table, version), where).select(key, *columns)
        added = [*columns, found] if found else columns
        if found:
            looked = looked.withColumn(found, F.lit(True))
        return rows.join(F.broadcast(looked) if small else looked, key, how).select(*rows.columns, *added)

    @staticmethod
    def without(rows: DataFrame, users: DataFrame) -> DataFrame:
        """The rows of ``rows`` of no user in ``users`` (few: broadcast)."""
        return rows.join(F.broadcast(users), C.COL_USER_ID, "left_anti")

    @staticmethod
    def joined(rows: DataFrame, other: DataFrame) -> DataFrame:
        """``rows`` with the columns of ``other``'s row of the same user (one at most; nulls where none)."""
        return rows.join(other, C.COL_USER_ID, "left").select(*rows.columns, *[c for c in other.columns if c != C.COL_USER_ID])

    @staticmethod
    def renamed(rows: DataFrame, names: Mapping[str, str]) -> DataFrame:
        """``rows`` with columns renamed (old -> new)."""
        return rows.withColumnsRenamed(dict(names))

    def nulled(self, rows: DataFrame, column: str, where: Where) -> DataFrame:
        """``rows`` with ``column`` null on the rows matching ``where``."""
        return rows.withColumn(column, F.when(self._condition(where), F.lit(None)).otherwise(F.col(column)))

    def lists(self, rows: DataFrame, order: Sequence[tuple[str, str]], columns: Mapping[str, str],
              sparse: tuple[str, str] | None = None) -> DataFrame:
        """Each user's rows as one row: user_id and one list per entry of ``columns`` (name -> column of ``rows``).

        The lists follow ``order`` ((column, "ascending" | "descending"); rows tied in it must
        be equal: Spark breaks ties by the listed columns, Arrow keeps the rows' order); a
        descending key among ascending ones must be a number. ``sparse``
        (name, positions): that list keeps only its non-null values, and list ``positions``
        holds where each stood. A grouping in the JVM: vectors stay there.
        """
        directions = {direction for _, direction in order}
        if directions - {"ascending", "descending"}:
            raise ValueError(f"unknown order {sorted(directions)}; orders are 'ascending' and 'descending'")
        descending = directions == {"descending"}
        keys = [F.col(c) if descending or d == "ascending" else -F.col(c) for c, d in order]
        entry = F.struct(*[key.alias(f"_k{i}") for i, key in enumerate(keys)],
                         *[F.col(source).alias(name) for name, source in columns.items()])
        grouped = rows.groupBy(C.COL_USER_ID).agg(F.sort_array(F.collect_list(entry), asc=not descending).alias("_l"))
        out = [F.col(f"_l.{name}").alias(name) for name in columns if sparse is None or name != sparse[0]]
        if sparse is not None:
            name, positions = sparse
            out += [F.expr(f"filter(_l.{name}, v -> v IS NOT NULL)").alias(name),
                    F.expr(f"filter(transform(_l, (e, i) -> IF(e.{name} IS NULL, -1, i)), i -> i >= 0)").alias(positions)]
        return grouped.select(C.COL_USER_ID, *out)

    @staticmethod
    def is_empty(rows: DataFrame) -> bool:
        """Whether ``rows`` has no row (a Spark job)."""
        return rows.isEmpty()

    @staticmethod
    def kept(rows: DataFrame) -> tuple[DataFrame, int]:
        """``rows`` persisted (read more than once), and how many there are (a Spark job)."""
        rows = rows.persist()
        return rows, rows.count()

    @classmethod
    def _filtered(cls, rows: DataFrame, where: Where) -> DataFrame:
        return rows.filter(cls._condition(where)) if where else rows

    @staticmethod
    def _condition(where: Where) -> Column:
        condition = None
        for column, op, value in _checked(where):
            field = F.col(column)
            term = (field == value if op == "=" else field.isin(list(value)) if op == "in"
                    else field.isNull() if op == "null" else field.isNotNull())
            condition = term if condition is None else condition & term
        return condition


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

    def where(self, rows: pa.Table, where: Where) -> pa.Table:
        """``SparkReader.where``."""
        return rows.filter(self._expression(where)) if where else rows

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

    def lookup(self, rows: pa.Table, table: str, version: int | None, key: str, columns: list[str], where: Where = (),
               how: str = "left", small: bool = False, found: str | None = None) -> pa.Table:
        """``SparkReader.lookup``: ``table`` is read for the keys of ``rows`` only; ``rows`` keep their order.

        Of several rows of ``table`` with one key, the first read is matched (keys are unique
        in the tables looked up). ``small`` does not matter here.
        """
        if how not in ("left", "inner"):
            raise ValueError(f"unknown lookup {how!r}; lookups are 'left' and 'inner'")
        keys = rows.column(key).combine_chunks().cast(pa.string())
        wanted = ds.field(key).isin(pc.unique(pc.drop_null(keys)))
        looked = self.lake.read_arrow(table, [key, *columns], wanted & self._expression(where) if where else wanted, version)
        if found:
            looked = looked.append_column(pa.field(found, pa.bool_()), pa.repeat(True, looked.num_rows))
        return _attached(rows, key, looked, [*columns, found] if found else columns, how)

    @staticmethod
    def without(rows: pa.Table, users: pa.Table) -> pa.Table:
        """``SparkReader.without``."""
        gone = users.column(C.COL_USER_ID).combine_chunks()
        return rows.filter(pc.invert(pc.is_in(rows.column(C.COL_USER_ID), value_set=gone)))

    @staticmethod
    def joined(rows: pa.Table, other: pa.Table) -> pa.Table:
        """``SparkReader.joined``; ``rows`` keep their order."""
        return _attached(rows, C.COL_USER_ID, other, [c for c in other.column_names if c != C.COL_USER_ID], "left")

    @staticmethod
    def renamed(rows: pa.Table, names: Mapping[str, str]) -> pa.Table:
        """``SparkReader.renamed``."""
        return rows.rename_columns([names.get(name, name) for name in rows.column_names])

    def nulled(self, rows: pa.Table, column: str, where: Where) -> pa.Table:
        """``SparkReader.nulled``."""
        matched = pc.fill_null(ds.dataset(rows).to_table(columns={"_m": self._expression(where)}).column("_m"), False)
        values = rows.column(column)
        return rows.set_column(rows.schema.get_field_index(column), rows.schema.field(column),
                               pc.if_else(matched, pa.scalar(None, values.type), values))

    @staticmethod
    def lists(rows: pa.Table, order: Sequence[tuple[str, str]], columns: Mapping[str, str],
              sparse: tuple[str, str] | None = None) -> pa.Table:
        """``SparkReader.lists``, one row per user in user order (ties in ``order`` keep the rows' order)."""
        import numpy as np

        rows = rows.sort_by([(C.COL_USER_ID, "ascending"), *order])
        users = rows.column(C.COL_USER_ID).combine_chunks()
        starts = np.flatnonzero(np.r_[True, pc.not_equal(users[1:], users[:-1]).to_numpy(zero_copy_only=False)]) \
            if len(users) else np.array([], np.int64)
        offsets = pa.array(np.r_[starts, len(users)].astype(np.int32))
        out = {C.COL_USER_ID: users.take(pa.array(starts, pa.int64()))}
        for name, source in columns.items():
            values = pa.ListArray.from_arrays(offsets, rows.column(source).combine_chunks())
            if sparse is not None and name == sparse[0]:
                out[name], out[sparse[1]] = sparse_lists(values)
            else:
                out[name] = values
        return pa.table(out)

    @staticmethod
    def is_empty(rows: pa.Table) -> bool:
        """``SparkReader.is_empty``."""
        return rows.num_rows == 0

    @staticmethod
    def kept(rows: pa.Table) -> tuple[pa.Table, int]:
        """``SparkReader.kept``: an Arrow table is held already."""
        return rows, rows.num_rows

    @staticmethod
    def _expression(where: Where) -> ds.Expression | None:
        expression = None
        for column, op, value in _checked(where):
            field = ds.field(column)
            term = (field == value if op == "=" else field.isin(pa.array(list(value))) if op == "in"
                    else field.is_null() if op == "null" else field.is_valid())
            expression = term if expression is None else expression & term
        return expression


def _attached(rows: pa.Table, key: str, found: pa.Table, columns: Sequence[str], how: str) -> pa.Table:
    """``rows`` (in their order) with ``columns`` of the first row of ``found`` with their ``key``; "inner": matched rows only."""
    keys = rows.column(key).combine_chunks().cast(pa.string())
    at = pc.index_in(keys, value_set=found.column(key).combine_chunks().cast(pa.string()))
    if how == "inner":
        rows, at = rows.filter(pc.is_valid(at)), pc.drop_null(at)
    for name in columns:
        rows = rows.append_column(found.schema.field(name), found.column(name).combine_chunks().take(at))
    return rows


def sparse_lists(aligned: pa.ListArray) -> tuple[pa.ListArray, pa.ListArray]:
    """Each list's non-null values, and their positions in it (int32): ``lists``' ``sparse`` on Arrow lists."""
    import numpy as np

    offsets = aligned.offsets.to_numpy()
    offsets = offsets - offsets[0]
    entries = aligned.flatten()
    valid = entries.is_valid().to_numpy(zero_copy_only=False)
    counted = np.r_[0, np.cumsum(valid)].astype(np.int32)
    rows = np.flatnonzero(valid)
    owner = np.searchsorted(offsets, rows, side="right") - 1
    missing = aligned.is_null()
    values = pa.ListArray.from_arrays(pa.array(counted[offsets]), entries.filter(pa.array(valid)), mask=missing)
    positions = pa.ListArray.from_arrays(pa.array(counted[offsets]), pa.array((rows - offsets[owner]).astype(np.int32)),
                                         mask=missing)
    return values, positions


Reader = SparkReader | ArrowReader


def reader(lake: LakeTables, on_driver: bool) -> Reader:
    """The reader of a stage's batch: ``on_driver`` is ``driver_path``'s answer."""
    return ArrowReader(lake) if on_driver else SparkReader(lake)
