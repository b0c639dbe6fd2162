"""Small-batch reads on the driver: a few rows of a table as an Arrow table, no Spark job.

For the bookkeeping rows (``pipeline_runs``) and the small-batch paths of the stages,
which look up the few keys of their batch; also the Arrow helpers that the change reads
(``lake/delta_log.py``) and copy-on-write (``lake/copy_on_write.py``) share.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from interestlake.lake.schemas import arrow_schema, table_spec
from interestlake.lake.uris import readable_uri


class ArrowReads:
    """The driver reads of ``LakeTables`` (a mixin): uses its ``_delta_rs_table()`` (``DeltaLogReads``)."""

    def read_rows(self, table: str, filters: list[tuple] | None = None, columns: list[str] | None = None) -> list[dict]:
        """Rows of a small bookkeeping table (``pipeline_runs``), read on the driver.

        No Spark job: the counterpart of ``upsert_rows``. ``filters`` are
        (column, op, value) tuples, all of which must hold (op: ``=``, ``!=``,
        ``<``, ``<=``, ``>``, ``>=``, ``in``). Not for data tables.
        """
        where = _row_filter(filters) if filters else None
        return self._delta_rs_table(table).to_pyarrow_table(columns=columns, filters=where).to_pylist()

    def read_arrow(self, table: str, columns: list[str], where, version: int | None = None) -> pa.Table:
        """Some columns of the rows matching ``where`` (a pyarrow dataset expression), read on the driver.

        For the small-batch paths, which look up the batch's own keys: file statistics
        skip files that cannot match, and only the matching rows are kept. Not for
        reading a table whole.
        """
        # Over the file list, not delta-rs's dataset: that one turns a column without
        # min/max statistics (long strings) into a guarantee that matches nothing.
        files = self._delta_rs_table(table, version).file_uris()
        return arrow_dataset(files, arrow_schema(table_spec(table).schema)).to_table(columns=columns, filter=where)


def _row_filter(filters: Sequence[tuple]):
    """The pyarrow expression of (column, op, value) tuples, all of which must hold.

    A column compared with text is cast to ``string`` first: delta-rs writes text as
    ``string_view`` into tables declared ``string``, and pyarrow has no kernel
    comparing the two, so a plain DNF filter fails on such files.
    """
    import operator
    from functools import reduce

    import pyarrow as pa
    import pyarrow.compute as pc

    compare = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
    terms = []
    for column, op, value in filters:
        texts = value if op == "in" else [value]
        field = pc.field(column)
        if all(isinstance(v, str) for v in texts):
            field = field.cast(pa.string())
        if op == "in":
            terms.append(field.isin(list(value)))
        elif op in compare:
            terms.append(compare[op](field, value))
        else:
            raise ValueError(f"unsupported filter operator {op!r} on {column!r}; use one of {[*compare, 'in']}")
    return reduce(operator.and_, terms)


def arrow_dataset(files: Sequence[str], schema: pa.Schema):
    """A pyarrow dataset of some data files of a table (URIs as delta-rs lists them)."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    if not files:
        return ds.dataset(schema.empty_table())
    fs = pafs.FileSystem.from_uri(readable_uri(files[0]))[0]
    paths = [pafs.FileSystem.from_uri(readable_uri(f))[1] for f in files]
    return ds.dataset(paths, schema=schema, format="parquet", filesystem=fs)


def key_of(table: pa.Table, on: Sequence[str]) -> pa.Array:
    """One string per row joining its ``on`` values, to match rows of two tables by several columns."""
    import pyarrow.compute as pc

    columns = [pc.cast(table.column(name), pa.string()) for name in on]
    joined = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, "\x1f")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined
