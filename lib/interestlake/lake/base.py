"""The table interface: ``LakeTables``, the types of its answers, and the rules every write follows.

Writes follow one rule whatever the backend: Spark executors write the data
files (for the few rows of a small batch, handed over as an Arrow table, the
driver does; see ``SmallBatchSettings``), and the driver commits all files of
one write as ONE Delta transaction,
tagged with an application transaction id (``Txn``) so that a retried run never
commits twice. Reads return a Spark DataFrame over one table version's file
list, so a reader sees either the old or the new version of a table, never a mix.

Reading is the same for both backends, since delta-rs reads any Delta table whoever
wrote it; it comes from three mixins: the Delta log and the changes between versions
(``lake/delta_log.py``), the small-batch readers on the driver (``lake/arrow_reads.py``)
and the scratch folders (``lake/scratch.py``). Writing is the backends': ``DeltaRsTables``
(``lake/delta_rs.py``, the default, no jars) and ``DeltaSparkTables``
(``lake/delta_spark.py``). ``open_lake`` (``lake/tables.py``) picks one.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interestlake.lake.arrow_reads import ArrowReads
from interestlake.lake.delta_log import DeltaLogReads
from interestlake.lake.errors import LakeError
from interestlake.lake.scratch import ScratchFolders
from interestlake.lake.schemas import TABLES, TableSpec, arrow_schema, table_spec
from interestlake.settings import LakeSettings

log = logging.getLogger(__name__)

# Our commits carry this marker in commitInfo.userMetadata (a JSON string, which
# both delta-rs and delta-spark write), so stages can read what a commit consumed.
_METADATA_MARKER = "interestlake"


@dataclass(frozen=True)
class Txn:
    """Delta application transaction id: a commit with ``version <= committed`` is a no-op."""

    app_id: str
    version: int


@dataclass(frozen=True)
class CommitResult:
    """What one write did; ``version`` is None when nothing was committed.

    ``rows`` counts the rows in the files added, which for a merge includes the
    unchanged rows copied out of rewritten files; ``source_rows`` counts only
    the rows of the DataFrame written (what a stage produced).
    """

    table: str
    version: int | None
    rows: int = 0
    files_added: int = 0
    files_removed: int = 0
    skipped: str | None = None
    source_rows: int = 0

    @property
    def committed(self) -> bool:
        return self.version is not None


class LakeTables(DeltaLogReads, ArrowReads, ScratchFolders, ABC):
    """Reads and writes the lake tables of one lake root.

    Args:
        spark: Session used to read snapshots and to write data files.
        lake: Lake settings (root, backend, storage options).
    """

    def __init__(self, spark: SparkSession, lake: LakeSettings):
        self.spark = spark
        self.lake = lake

    def uri(self, table: str) -> str:
        table_spec(table)
        return self.lake.table_uri(table)

    # -- reading (the Delta log and changes: DeltaLogReads; on the driver: ArrowReads) --

    @abstractmethod
    def read(self, table: str, version: int | None = None) -> DataFrame:
        """A consistent snapshot of one table version (latest by default)."""

    def register_views(self, tables: Iterable[str] | None = None) -> list[str]:
        """Registers each table's latest snapshot as a temporary view of the same name."""
        names = list(tables or TABLES)
        for name in names:
            self.read(name).createOrReplaceTempView(name)
        return names

    # -- our commits in the Delta log: transaction ids and metadata -------------

    def committed(self, table: str, txn: Txn) -> bool:
        """True when a commit with this application transaction id is already in the table."""
        done = self._delta_rs_table(table).transaction_version(txn.app_id)
        return done is not None and done >= txn.version

    def last_metadata(self, table: str, stage: str | None = None, search: int = 50) -> dict[str, Any] | None:
        """Metadata of the newest commit this library made to a table (optionally by one stage).

        Stages use it to see which input versions the previous run consumed.
        """
        for entry in self._delta_rs_table(table).history(search):
            raw = entry.get("userMetadata")
            if not raw:
                continue
            try:
                meta = json.loads(raw)
            except ValueError:
                continue
            if isinstance(meta, dict) and meta.get(_METADATA_MARKER) and stage in (None, meta.get("stage")):
                return {**meta, "version": entry.get("version")}
        return None

    # -- writing -----------------------------------------------------------------

    @abstractmethod
    def ensure_tables(self, tables: Iterable[str] | None = None) -> None:
        """Creates missing tables (empty, declared schema) and checks existing ones.

        Raises:
            LakeError: When the lake was written by an earlier layout (``check_layout``).
        """

    def check_layout(self, tables: Iterable[str] | None = None) -> None:
        """Refuses a lake written by an earlier layout, saying to run ``interestlake upgrade``.

        Only the given tables are checked (default: all, where a missing table among existing
        ones is an old layout too; a lake without any table is new).
        """
        from interestlake.lake.upgrade import old_layout_message

        stored = self.stored_columns(tables)
        if tables is not None:
            stored = {name: columns for name, columns in stored.items() if columns is not None}
        message = old_layout_message(self.lake.root, stored)
        if message:
            raise LakeError(message)

    @abstractmethod
    def replace_layout(self, table: str, df: DataFrame, metadata: Mapping | None = None) -> CommitResult:
        """Replaces a table's rows and schema with ``df`` under the declared schema, in one commit (``upgrade``).

        Through delta-rs whatever ``lake.backend`` is: both backends write the same Delta tables,
        and a delta-spark overwrite would keep the old schema.
        """

    def append(self, table: str, df: DataFrame, *, txn: Txn | None = None, metadata: Mapping | None = None) -> CommitResult:
        """Adds the rows of ``df``; nothing is committed when ``df`` is empty."""
        return self._write(table, df, "append", None, txn, metadata)

    def overwrite(self, table: str, df: DataFrame, *, txn: Txn | None = None, metadata: Mapping | None = None) -> CommitResult:
        """Replaces the whole content of the table with ``df`` in one commit."""
        return self._write(table, df, "overwrite", None, txn, metadata)

    def merge(
        self,
        table: str,
        df: DataFrame,
        *,
        on: Sequence[str] | None = None,
        txn: Txn | None = None,
        metadata: Mapping | None = None,
    ) -> CommitResult:
        """Upserts: every existing row whose ``on`` values occur in ``df`` is replaced by ``df``'s rows.

        With ``on`` = the table keys (the default) this is an upsert by key; with a
        prefix of the keys (e.g. ``user_id`` for ``recommendations``) it replaces
        whole groups, so a reader never sees a group half old, half new.
        """
        spec = table_spec(table)
        on = tuple(on or spec.keys)
        unknown = [c for c in on if c not in spec.columns]
        if unknown:
            raise ValueError(f"merge on {unknown}: not columns of {table} ({spec.columns})")
        return self._write(table, df, "merge", on, txn, metadata)

    def delete(
        self, table: str, keys: DataFrame, *, on: Sequence[str] | None = None, metadata: Mapping | None = None
    ) -> CommitResult:
        """Deletes every row whose ``on`` values (default: the table keys) occur in ``keys``, in one commit.

        Only the files holding such rows are rewritten (without them). Deleting
        rows that are already gone commits nothing, so a retried delete is a no-op.
        The result's ``source_rows`` is the number of rows deleted.
        """
        spec = table_spec(table)
        on = tuple(on or spec.keys)
        unknown = [c for c in on if c not in spec.columns]
        if unknown:
            raise ValueError(f"delete on {unknown}: not columns of {table} ({spec.columns})")
        user_metadata = commit_metadata(metadata)
        return self._delete(spec, keys.select(*on).distinct(), on, user_metadata)

    @abstractmethod
    def _delete(self, spec: TableSpec, keys: DataFrame, on: Sequence[str], user_metadata: str) -> CommitResult:
        """Deletes the rows matching ``keys`` on ``on`` and commits it as one transaction."""

    def upsert_rows(self, table: str, rows: Sequence[Mapping[str, Any]], metadata: Mapping | None = None) -> None:
        """Upserts a few driver-side rows by key (bookkeeping such as ``pipeline_runs``).

        Not for data: a handful of rows does not need a Spark job.
        """
        spec = table_spec(table)
        self.merge(table, self.spark.createDataFrame([dict(r) for r in rows], spec.schema), metadata=metadata)

    def _write(self, table, df, mode, on, txn, metadata) -> CommitResult:
        spec = table_spec(table)
        if self._already_committed(table, txn):
            return CommitResult(table, None, skipped="already committed")
        rows = conform_arrow(df, spec) if isinstance(df, pa.Table) else conform(df, spec)
        user_metadata = commit_metadata(metadata)
        return self._commit(spec, rows, mode, on, txn, user_metadata)

    @abstractmethod
    def _commit(self, spec: TableSpec, df: DataFrame, mode: str, on, txn: Txn | None, user_metadata: str) -> CommitResult:
        """Writes ``df`` and commits it as one transaction."""

    @abstractmethod
    def record_progress(self, table: str, *, txn: Txn | None = None, metadata: Mapping | None = None) -> CommitResult:
        """Commits no rows, only ``metadata`` (and ``txn``), through delta-rs for either backend.

        For a stage that found nothing to write in what it read: its commit still
        records the input versions it consumed, so its next run starts from there
        instead of reading the same changes again (and again, until something is written).
        """

    def _already_committed(self, table: str, txn: Txn | None) -> bool:
        """True (and logged) when ``txn`` is already in the table: a retried run writes nothing twice."""
        if txn is None or not self.committed(table, txn):
            return False
        log.info("%s: transaction %s/%s already committed; nothing to do", table, txn.app_id, txn.version)
        return True


def commit_metadata(metadata: Mapping | None) -> str:
    """The ``userMetadata`` of a commit of ours: the caller's metadata, marked as this library's."""
    return json.dumps({_METADATA_MARKER: True, **(metadata or {})}, sort_keys=True, default=str)


def _missing_columns(spec: TableSpec, columns: Sequence[str]) -> list[str]:
    """Declared columns absent from ``columns``; raises when a required one is among them."""
    missing = [f.name for f in spec.schema.fields if f.name not in columns]
    required_missing = [name for name in missing if not spec.schema[name].nullable]
    if required_missing:
        raise ValueError(f"cannot write {spec.name}: DataFrame lacks required column(s) {required_missing}")
    return missing


def conform(df: DataFrame, spec: TableSpec) -> DataFrame:
    """Selects and casts ``df`` to the table's declared schema, naming missing columns."""
    _missing_columns(spec, df.columns)
    return df.select(
        [
            (F.col(f.name) if f.name in df.columns else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in spec.schema.fields
        ]
    )


def conform_arrow(table: pa.Table, spec: TableSpec) -> pa.Table:
    """``conform`` for an Arrow table: the declared columns, in order, cast to their types."""
    schema = arrow_schema(spec.schema)
    _missing_columns(spec, table.column_names)
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
