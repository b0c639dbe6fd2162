"""What a table's Delta log says, read with delta-rs whoever wrote the table.

Versions, stored columns and row counts, and the rows changed between two versions
(``changes`` as a Spark DataFrame, ``change_rows`` as an Arrow table on the driver):
what an incremental stage has not processed yet. Both backends read their metadata
this way, so the metadata reads are the same whichever backend wrote the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa
from pyspark.sql import DataFrame

from interestlake import constants as C
from interestlake.lake.arrow_reads import arrow_dataset, key_of
from interestlake.lake.errors import LakeError, LakeHistoryGone
from interestlake.lake.schemas import TABLES, TableSpec, arrow_schema, table_spec


class DeltaLogReads:
    """The Delta log reads of ``LakeTables`` (a mixin): uses its ``lake``, ``spark``, ``uri()`` and ``read()``."""

    def version(self, table: str) -> int:
        """Latest committed version of a table."""
        return self._delta_rs_table(table).version()

    def versions(self, tables: Iterable[str]) -> dict[str, int]:
        """Latest versions of several tables, for recording what a stage read."""
        return {name: self.version(name) for name in tables}

    def changes(self, table: str, since: int | None, until: int, identity: Sequence[str] | None = None) -> DataFrame:
        """Rows written between two versions: what a stage has not processed yet.

        The rows of files added after ``since`` (up to ``until``), less the rows a
        merge merely copied out of rewritten files: those are recognised by
        ``identity`` (default: the keys and ``run_id``), which copies keep.
        Reads only the files added and removed in between, not the table.

        Args:
            table: Table name.
            since: Version already processed; None means everything up to ``until``.
            until: Version to read up to (pin it with ``version()`` before reading).
            identity: Columns that identify an unchanged, copied row.
        """
        spec = table_spec(table)
        if since is None:
            return self.read(table, until)
        added, removed = self._changed_files(table, since, until)
        added = self._read_files(spec, added)
        if not removed:
            return added
        identity = list(identity or [*spec.keys, C.COL_RUN_ID])
        copied = self._read_files(spec, removed).select(*identity)
        return added.join(copied, identity, "left_anti")

    def change_rows(
        self, table: str, since: int, until: int, columns: list[str], identity: Sequence[str] | None = None
    ) -> pa.Table:
        """``changes`` read on the driver (some columns), for the small-batch paths."""
        import pyarrow.compute as pc

        spec = table_spec(table)
        identity = list(identity or [*spec.keys, C.COL_RUN_ID])
        added, removed = self._changed_files(table, since, until)
        schema = arrow_schema(spec.schema)

        def read(files: list[str], names: list[str]) -> pa.Table:
            return arrow_dataset(files, schema).to_table(columns=names)

        wanted = list(dict.fromkeys([*columns, *identity]))
        rows = read(added, wanted)
        if removed:
            copied = key_of(read(removed, identity), identity)
            rows = rows.filter(pc.invert(pc.is_in(key_of(rows, identity), value_set=copied)))
        return rows.select(columns)

    def added_rows(self, table: str, since: int, until: int) -> int | None:
        """How many rows the files added between two versions hold (their Delta statistics).

        None when a file added in between has no row count in the log (written without statistics).
        """
        if since == until:
            return 0

        def records(version: int) -> dict[str, int | None]:
            actions = pa.table(self._delta_rs_table(table, version).get_add_actions(flatten=True))
            return dict(zip(actions.column("path").to_pylist(), actions.column("num_records").to_pylist()))

        before, after = records(since), records(until)
        added = [count for path, count in after.items() if path not in before]
        return None if any(count is None for count in added) else sum(added)

    def _changed_files(self, table: str, since: int, until: int) -> tuple[list[str], list[str]]:
        """URIs of the files added and removed between two versions."""
        if since > until:
            raise ValueError(f"{table}: changes since version {since} asked up to an older version {until}")
        if since == until:
            return [], []
        before = set(self._delta_rs_table(table, since).file_uris())
        after = set(self._delta_rs_table(table, until).file_uris())
        return sorted(after - before), sorted(before - after)

    def _read_files(self, spec: TableSpec, files: Sequence[str]) -> DataFrame:
        if not files:
            return self.spark.createDataFrame([], spec.schema)
        return self.spark.read.schema(spec.schema).parquet(*files)

    def has_version(self, table: str, version: int) -> bool:
        """True when ``version`` of the table can still be read (it is in the Delta log)."""
        try:
            self._delta_rs_table(table, version)
        except LakeHistoryGone:
            return False
        return True

    def stored_columns(self, tables: Iterable[str] | None = None) -> dict[str, list[str] | None]:
        """Column names of each table as stored in its Delta log (None where the table does not exist)."""
        from deltalake import DeltaTable

        options = self.lake.storage_options or None
        found: dict[str, list[str] | None] = {}
        for name in tables or TABLES:
            uri = self.uri(name)
            found[name] = ([f.name for f in DeltaTable(uri, storage_options=options).schema().fields]
                           if DeltaTable.is_deltatable(uri, storage_options=options) else None)
        return found

    def read_stored(self, table: str) -> DataFrame:
        """Every row of a table's latest version read under the declared schema, whatever columns its
        files have (the ones they lack come out null): what ``upgrade`` rewrites."""
        return self._read_files(table_spec(table), self._delta_rs_table(table).file_uris())

    def stored_rows(self, table: str) -> int:
        """Rows of a table's latest version, from the Delta log's statistics (files without them count 0)."""
        actions = pa.table(self._delta_rs_table(table).get_add_actions(flatten=True))
        return sum(n or 0 for n in actions.column("num_records").to_pylist()) if actions.num_rows else 0

    def _delta_rs_table(self, table: str, version: int | None = None):
        # delta-rs reads any Delta table, whoever wrote it; both backends use it for metadata.
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        options = self.lake.storage_options or None
        try:
            return DeltaTable(self.uri(table), version=version, storage_options=options)
        except TableNotFoundError:
            if version is not None and DeltaTable.is_deltatable(self.uri(table), storage_options=options):
                raise LakeHistoryGone(
                    f"table {table!r}: version {version} is no longer in its Delta log (older than the table's "
                    "log retention, delta.logRetentionDuration, 30 days by default)"
                ) from None
            raise LakeError(
                f"table {table!r} does not exist at {self.uri(table)}; run `interestlake ingest` "
                "(or any stage) first, which creates the lake tables"
            ) from None
