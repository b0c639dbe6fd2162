"""The Delta Lake table layer: one interface, two backends.

Writes follow one rule whatever the backend: Spark executors write the data
files (for the few rows of a small batch, handed over as an Arrow table, the
driver does; see ``SmallBatchSettings``), and the driver commits all files of
one write as ONE Delta transaction,
tagged with an application transaction id (``Txn``) so that a retried run never
commits twice. Reads return a Spark DataFrame over one table version's file
list, so a reader sees either the old or the new version of a table, never a mix.

``DeltaRsTables`` (default) commits with delta-rs and needs no jars;
``DeltaSparkTables`` uses delta-spark for clusters that have its jars.
Both produce the same tables.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.errors import LakeError
from interestlake.lake.schemas import PERSONAL_COLUMNS, TABLES, TableSpec, arrow_schema, table_spec
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


# What the operating system says when the lake's storage refuses a write, in the words
# Python, Java (Spark, Hadoop) and Rust (delta-rs) all quote from strerror().
STORAGE_FAILURES = ("No space left on device", "Read-only file system", "Disk quota exceeded", "Permission denied")


def storage_failure(exc: BaseException) -> str | None:
    """The storage failure behind an error (``STORAGE_FAILURES``), or None when it is something else.

    A write that fails in a Spark task, a streaming query or a delta-rs commit surfaces
    as that layer's own error whose text quotes the operating system's; the causes and
    contexts of ``exc`` are searched too.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        for failure in STORAGE_FAILURES:
            if failure.lower() in text.lower():
                return failure
        exc = exc.__cause__ or exc.__context__
    return None


class LakeConflictError(LakeError):
    """Another writer committed to the same table in between; the write was not applied."""


class LakeHistoryGone(LakeError):
    """A past version of a table is no longer in its Delta log (older than the log retention).

    An incremental stage reads what changed since the versions its last run read;
    when those were cleaned up, the stage must recompute in full instead.
    """


class LakeTables(ABC):
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

    # -- reading -----------------------------------------------------------------

    def version(self, table: str) -> int:
        """Latest committed version of a table."""
        return self._delta_rs_table(table).version()

    def versions(self, tables: Iterable[str]) -> dict[str, int]:
        """Latest versions of several tables, for recording what a stage read."""
        return {name: self.version(name) for name in tables}

    @abstractmethod
    def read(self, table: str, version: int | None = None) -> DataFrame:
        """A consistent snapshot of one table version (latest by default)."""

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
            return _arrow_dataset(files, schema).to_table(columns=names)

        wanted = list(dict.fromkeys([*columns, *identity]))
        rows = read(added, wanted)
        if removed:
            copied = _key_of(read(removed, identity), identity)
            rows = rows.filter(pc.invert(pc.is_in(_key_of(rows, identity), value_set=copied)))
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
        return _arrow_dataset(files, arrow_schema(table_spec(table).schema)).to_table(columns=columns, filter=where)

    @contextmanager
    def scratch(self, purpose: str) -> Iterator[str]:
        """A new folder under ``<lake.root>/_scratch`` for intermediate files executors read.

        Removed when the block ends, whether it succeeds or fails. Folders of the
        same purpose left by a killed run are removed first: the lake has one
        writer, so nothing else can be using them.
        """
        import pyarrow.fs as pafs

        fs, path, uri = self._scratch_folder(purpose, f"{purpose}-{uuid.uuid4().hex}")
        try:
            yield uri
        finally:
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                fs.delete_dir(path)

    def kept_scratch(self, purpose: str, key: str, write: Callable[[str], object]) -> tuple[str, bool]:
        """A folder under ``<lake.root>/_scratch`` holding files that depend only on ``key``, kept between runs.

        ``write(uri)`` fills the folder (a Spark write, whose ``_SUCCESS`` marker comes
        last) unless an earlier run completed it; a half-written folder is written
        again. Intermediate files that follow table versions, such as the recommend
        stage's item matrix, are so written once per version instead of once per run.
        Folders of the same purpose under another key are removed.

        Returns:
            The folder's URI, and whether this call wrote it.
        """
        import hashlib

        import pyarrow.fs as pafs

        fs, path, uri = self._scratch_folder(purpose, f"{purpose}-kept-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
        if fs.get_file_info(f"{path}/_SUCCESS").type == pafs.FileType.File:
            return uri, False
        write(uri)
        return uri, True

    def _scratch_folder(self, purpose: str, name: str):
        """(filesystem, path, URI) of ``_scratch/<name>``, after removing the other folders of ``purpose``.

        Only this lake's single writer uses its scratch folders, so any other folder of
        the purpose is left over from an earlier run.
        """
        import pyarrow.fs as pafs

        from interestlake.lake.uris import readable_uri

        parent = f"{self.lake.root.rstrip('/')}/_scratch"
        fs, base = pafs.FileSystem.from_uri(readable_uri(parent))
        for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
            if info.base_name.startswith(f"{purpose}-") and info.base_name != name:
                fs.delete_dir(info.path)
        return fs, f"{base.rstrip('/')}/{name}", f"{parent}/{name}"

    def register_views(self, tables: Iterable[str] | None = None) -> list[str]:
        """Registers each table's latest snapshot as a temporary view of the same name."""
        names = list(tables or TABLES)
        for name in names:
            self.read(name).createOrReplaceTempView(name)
        return names

    # -- writing -----------------------------------------------------------------

    @abstractmethod
    def ensure_tables(self, tables: Iterable[str] | None = None) -> None:
        """Creates missing tables (empty, declared schema) and checks existing ones.

        Raises:
            LakeError: When the lake was written by an earlier layout (``check_layout``).
        """

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

    def read_stored(self, table: str) -> DataFrame:
        """Every row of a table's latest version read under the declared schema, whatever columns its
        files have (the ones they lack come out null): what ``upgrade`` rewrites."""
        return self._read_files(table_spec(table), self._delta_rs_table(table).file_uris())

    def stored_rows(self, table: str) -> int:
        """Rows of a table's latest version, from the Delta log's statistics (files without them count 0)."""
        actions = pa.table(self._delta_rs_table(table).get_add_actions(flatten=True))
        return sum(n or 0 for n in actions.column("num_records").to_pylist()) if actions.num_rows else 0

    def replace_layout(self, table: str, df: DataFrame, metadata: Mapping | None = None) -> CommitResult:
        """Replaces a table's rows and schema with ``df`` under the declared schema, in one commit (``upgrade``).

        Through delta-rs whatever ``lake.backend`` is: both backends write the same Delta tables,
        and a delta-spark overwrite would keep the old schema.
        """
        spec = table_spec(table)
        writer = self if isinstance(self, DeltaRsTables) else DeltaRsTables(self.spark, self.lake)
        return writer._commit(spec, conform(df, spec), "overwrite", None, None, _commit_metadata(metadata))

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
        user_metadata = _commit_metadata(metadata)
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
        user_metadata = _commit_metadata(metadata)
        return self._commit(spec, rows, mode, on, txn, user_metadata)

    @abstractmethod
    def _commit(self, spec: TableSpec, df: DataFrame, mode: str, on, txn: Txn | None, user_metadata: str) -> CommitResult:
        """Writes ``df`` and commits it as one transaction."""

    def record_progress(self, table: str, *, txn: Txn | None = None, metadata: Mapping | None = None) -> CommitResult:
        """Commits no rows, only ``metadata`` (and ``txn``), through delta-rs for either backend.

        For a stage that found nothing to write in what it read: its commit still
        records the input versions it consumed, so its next run starts from there
        instead of reading the same changes again (and again, until something is written).
        """
        if self._already_committed(table, txn):
            return CommitResult(table, None, skipped="already committed")
        return self._commit_files(table_spec(table), self._delta_rs_table(table), _StagedFiles([], [], 0, []), [], "append", txn,
                                  _commit_metadata(metadata), 0)

    def _already_committed(self, table: str, txn: Txn | None) -> bool:
        """True (and logged) when ``txn`` is already in the table: a retried run writes nothing twice."""
        if txn is None or not self.committed(table, txn):
            return False
        log.info("%s: transaction %s/%s already committed; nothing to do", table, txn.app_id, txn.version)
        return True

    def _commit_files(self, spec, snapshot, staged, removed, mode, txn, user_metadata, source_rows) -> CommitResult:
        """Commits staged files and removals as one transaction (discarding the files if it fails)."""
        from deltalake import Schema
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import CommitProperties, RemoveAction, Transaction

        now_ms = int(time.time() * 1000)
        actions = staged.add_actions + [
            RemoveAction(path, True, now_ms, size) for path, size in removed
        ]
        properties = CommitProperties(
            custom_metadata={"userMetadata": user_metadata},
            app_transactions=[Transaction(txn.app_id, txn.version)] if txn else None,
        )
        try:
            snapshot.create_write_transaction(
                actions,
                mode="overwrite" if mode == "overwrite" else "append",
                schema=Schema.from_arrow(arrow_schema(spec.schema)),
                commit_properties=properties,
            )
        except CommitFailedError as exc:
            staged.discard()
            if txn is not None and self.committed(spec.name, txn):
                return CommitResult(spec.name, None, skipped="already committed")
            raise LakeConflictError(
                f"{spec.name}: commit conflicted with another writer ({exc}); nothing was written. "
                "Each table has one writer: make sure no other refresh runs, then retry."
            ) from exc
        snapshot.update_incremental()
        return CommitResult(
            spec.name, snapshot.version(), staged.rows, len(staged.add_actions), len(removed), source_rows=source_rows
        )

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


def _commit_metadata(metadata: Mapping | None) -> str:
    """The ``userMetadata`` of a commit of ours: the caller's metadata, marked as this library's."""
    return json.dumps({_METADATA_MARKER: True, **(metadata or {})}, sort_keys=True, default=str)


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


class DeltaRsTables(LakeTables):
    """Spark writes Parquet, delta-rs commits it: no Delta jars needed."""

    def ensure_tables(self, tables: Iterable[str] | None = None) -> None:
        from deltalake import DeltaTable, Schema

        self.check_layout(tables)
        for name in tables or TABLES:
            spec = table_spec(name)
            uri = self.uri(name)
            if DeltaTable.is_deltatable(uri, storage_options=self.lake.storage_options or None):
                continue
            DeltaTable.create(
                uri,
                schema=Schema.from_arrow(arrow_schema(spec.schema)),
                mode="ignore",
                name=name,
                description=spec.description,
                storage_options=self.lake.storage_options or None,
            )

    def read(self, table: str, version: int | None = None) -> DataFrame:
        return self._read_files(table_spec(table), self._delta_rs_table(table, version).file_uris())

    def upsert_rows(self, table: str, rows: Sequence[Mapping[str, Any]], metadata: Mapping | None = None) -> None:
        import pyarrow as pa
        from deltalake.transaction import CommitProperties

        spec = table_spec(table)
        source = pa.Table.from_pylist([dict(r) for r in rows], schema=arrow_schema(spec.schema))
        user_metadata = _commit_metadata(metadata)
        (
            self._delta_rs_table(table)
            .merge(
                source=source,
                predicate=" AND ".join(f"t.{k} = s.{k}" for k in spec.keys),
                source_alias="s",
                target_alias="t",
                commit_properties=CommitProperties(custom_metadata={"userMetadata": user_metadata}),
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    def _commit(self, spec, df, mode, on, txn, user_metadata) -> CommitResult:
        snapshot = self._delta_rs_table(spec.name)
        # The new rows are computed and written once; a merge then reads their keys
        # back from these files instead of evaluating the plan a second time.
        staged = self._stage_files(spec, df)
        source_rows = staged.rows
        removed: list[tuple[str, int]] = []
        if mode == "merge" and staged.rows:
            try:
                rewritten, removed = self._rewrite_touched_files(spec, snapshot, staged, on, local=isinstance(df, pa.Table))
                if rewritten is not None:
                    staged = staged.plus(rewritten)
            except Exception:
                staged.discard()
                raise
        if staged.rows == 0 and not removed and mode != "overwrite":
            staged.discard()
            return CommitResult(spec.name, None, skipped="no rows")
        return self._commit_files(spec, snapshot, staged, removed, mode, txn, user_metadata, source_rows)

    def _delete(self, spec, keys, on, user_metadata) -> CommitResult:
        import pyarrow.fs as pafs

        snapshot = self._delta_rs_table(spec.name)
        with self.scratch("delete") as folder:
            keys.write.mode("errorifexists").parquet(folder)
            fs, base = pafs.FileSystem.from_uri(folder)
            paths = [
                f"{folder.rstrip('/')}/{info.base_name}"
                for info in fs.get_file_info(pafs.FileSelector(base))
                if info.is_file and info.base_name.endswith(".parquet")
            ]
            rewritten, removed = self._rewrite_touched_files(spec, snapshot, _StagedFiles([], [], 0, paths), on)
        if not removed:
            return CommitResult(spec.name, None, skipped="no rows")
        staged = rewritten or _StagedFiles([], [], 0, [])
        import pyarrow as pa

        records = pa.table(snapshot.get_add_actions(flatten=True)).select(["path", "num_records"]).to_pylist()
        held = {r["path"]: r["num_records"] or 0 for r in records}
        deleted = sum(held.get(path, 0) for path, _ in removed) - staged.rows
        return self._commit_files(spec, snapshot, staged, removed, "delete", None, user_metadata, deleted)

    def _rewrite_touched_files(
        self, spec, snapshot, staged, on, local: bool = False
    ) -> tuple[_StagedFiles | None, list[tuple[str, int]]]:
        """Copy-on-write: rewrites the files holding rows to replace, without those rows.

        One executor task per live file reads the file's key columns with pyarrow; a
        file holding none of the replaced keys (read by each task from the staged
        files) is left alone, any other is copied without those rows into a new
        staging folder. Arrow copies whole columns, which costs a fraction of a
        Spark row-by-row rewrite of the vector columns; nothing is collected to the
        driver but the list of files rewritten. With ``local`` (the few keys of a
        small batch), the driver runs the same copy itself, file by file: a Spark
        job would cost more than reading the key columns.

        Returns:
            The rewritten files (None when no file is touched) and the (path, size)
            of each touched file, to remove.
        """
        import pyarrow as pa

        actions = pa.table(snapshot.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
        if not actions:
            return None, []
        root = snapshot.table_uri.rstrip("/")
        relative_dir = _staging_dir()
        target = f"{self.uri(spec.name).rstrip('/')}/{relative_dir}"
        listed = [(f"{root}/{unquote(a['path'])}", a["path"], a["size_bytes"]) for a in actions]
        copy = _copy_without_keys(list(on), staged.paths, target)
        try:
            if local:
                files = pa.RecordBatch.from_pylist([dict(zip(("uri", "path", "size"), row)) for row in listed])
                touched = [(row["path"], row["size"]) for out in copy(iter([files])) for row in out.to_pylist()]
            else:
                files = self.spark.createDataFrame(listed, "uri string, path string, size long")
                tasks = max(1, min(len(actions), self.spark.sparkContext.defaultParallelism * 4))
                touched = [(row.path, row.size) for row in files.repartition(tasks).mapInArrow(copy, "path string, size long").collect()]
            rewritten = _StagedFiles.collect(spec, target, relative_dir)
        except Exception:
            _StagedFiles([target], [], 0, []).discard()
            raise
        if not touched:
            rewritten.discard()
            return None, []
        return rewritten, touched

    def _stage_files(self, spec: TableSpec, df: DataFrame | pa.Table) -> _StagedFiles:
        """Executors (the driver, for an Arrow table) write Parquet under the table root; the driver reads the footers."""
        relative_dir = _staging_dir()
        target = f"{self.uri(spec.name).rstrip('/')}/{relative_dir}"
        try:
            if isinstance(df, pa.Table):
                _write_parquet(df, target)
            else:
                df.write.mode("errorifexists").parquet(target)
        except Exception:
            # A write that failed half-way (a full disk) leaves no stray Parquet files beside the table's.
            _StagedFiles([target], [], 0, []).discard()
            raise
        return _StagedFiles.collect(spec, target, relative_dir)


def _staging_dir() -> str:
    """A new folder (relative to the table root) for the files of one write."""
    return f"data/{time.strftime('%Y%m%d')}-{uuid.uuid4().hex}"


def _write_parquet(table: pa.Table, target: str) -> None:
    """Writes an Arrow table as one Parquet file into the new folder ``target`` (nothing when it is empty)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    if not table.num_rows:
        return
    fs, folder = pafs.FileSystem.from_uri(target)
    fs.create_dir(folder, recursive=True)
    pq.write_table(table, f"{folder}/part-00000-{uuid.uuid4().hex}.parquet", filesystem=fs, compression="snappy")


def _arrow_dataset(files: Sequence[str], schema: pa.Schema):
    """A pyarrow dataset of some data files of a table (URIs as delta-rs lists them)."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    from interestlake.lake.uris import readable_uri

    if not files:
        return ds.dataset(schema.empty_table())
    fs = pafs.FileSystem.from_uri(readable_uri(files[0]))[0]
    paths = [pafs.FileSystem.from_uri(readable_uri(f))[1] for f in files]
    return ds.dataset(paths, schema=schema, format="parquet", filesystem=fs)


def _key_of(table: pa.Table, on: Sequence[str]) -> pa.Array:
    """One string per row joining its ``on`` values, to match rows of two tables by several columns."""
    import pyarrow.compute as pc

    columns = [pc.cast(table.column(name), pa.string()) for name in on]
    joined = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, "\x1f")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _copy_without_keys(on: list[str], key_files: list[str], target: str):
    """Builds the executor function of ``_rewrite_touched_files`` (kept free of Spark objects)."""

    def run(batches):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        def read(uri: str, columns=None) -> pa.Table:
            fs, path = pafs.FileSystem.from_uri(uri)
            return pq.read_table(path, columns=columns, filesystem=fs)

        replaced = None
        for batch in batches:
            touched = {"path": [], "size": []}
            for uri, path, size in zip(*(batch.column(name).to_pylist() for name in ("uri", "path", "size"))):
                if replaced is None:
                    replaced = pa.chunked_array([_key_of(read(f, on), on) for f in key_files]).combine_chunks().unique()
                hit = pc.is_in(_key_of(read(uri, on), on), value_set=replaced)
                if not pc.any(hit).as_py():
                    continue
                _write_parquet(read(uri).filter(pc.invert(hit)), target)
                touched["path"].append(path)
                touched["size"].append(size)
            yield pa.RecordBatch.from_pydict(touched, schema=pa.schema([("path", pa.string()), ("size", pa.int64())]))

    return run


@dataclass
class _StagedFiles:
    """Data files written by Spark jobs and not yet committed."""

    targets: list[str]
    add_actions: list
    rows: int
    paths: list[str]

    def plus(self, other: _StagedFiles) -> _StagedFiles:
        return _StagedFiles(
            self.targets + other.targets, self.add_actions + other.add_actions, self.rows + other.rows,
            self.paths + other.paths,
        )

    @classmethod
    def collect(cls, spec: TableSpec, target: str, relative_dir: str) -> _StagedFiles:
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq
        from deltalake.transaction import AddAction

        fs, base = pafs.FileSystem.from_uri(target)
        infos = [
            info
            for info in fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
            if info.is_file and info.base_name.endswith(".parquet") and not info.base_name.startswith((".", "_"))
        ]
        actions, rows, paths = [], 0, []
        for info in sorted(infos, key=lambda i: i.base_name):
            with fs.open_input_file(info.path) as handle:
                footer = pq.read_metadata(handle)
            if footer.num_rows == 0:
                fs.delete_file(info.path)
                continue
            stats = _file_stats(footer, skip_values=PERSONAL_COLUMNS)
            nulls = [name for name, count in stats["nullCount"].items() if count and not spec.schema[name].nullable]
            if nulls:
                fs.delete_dir(base)
                raise ValueError(f"cannot write {spec.name}: null values in required column(s) {nulls}")
            rows += footer.num_rows
            paths.append(f"{target.rstrip('/')}/{info.base_name}")
            mtime_ms = int(info.mtime.timestamp() * 1000) if info.mtime else int(time.time() * 1000)
            actions.append(
                AddAction(f"{relative_dir}/{info.base_name}", info.size, {}, mtime_ms, True, json.dumps(stats))
            )
        return cls([target], actions, rows, paths)

    def discard(self) -> None:
        """Deletes files that will never be committed (a table's vacuum would too, later)."""
        import pyarrow.fs as pafs

        for target in self.targets:
            fs, base = pafs.FileSystem.from_uri(target)
            try:
                if fs.get_file_info(base).type != pafs.FileType.NotFound:
                    fs.delete_dir(base)
            except OSError as exc:
                log.warning("could not delete uncommitted files under %s: %s", target, exc)


def _file_stats(footer, skip_values: Iterable[str] = ()) -> dict[str, Any]:
    """Delta file statistics from a Parquet footer, so readers can skip files by min/max.

    Columns in ``skip_values`` get null counts only: their min/max would copy
    values into the Delta log, which a vacuum never deletes.
    """
    num_rows = footer.num_rows
    null_count: dict[str, int] = {}
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    schema = footer.schema.to_arrow_schema()
    for index, field in enumerate(schema):
        nulls, lows, highs, complete = 0, [], [], True
        for group in range(footer.num_row_groups):
            column = footer.row_group(group).column(index)
            # Nested columns (vectors) have several leaves; stats of a leaf are not the column's.
            if column.path_in_schema != field.name or column.statistics is None:
                complete = False
                break
            stats = column.statistics
            nulls += stats.null_count or 0
            if stats.has_min_max:
                lows.append(stats.min)
                highs.append(stats.max)
        if not complete:
            continue
        null_count[field.name] = nulls
        if lows and field.name not in skip_values and all(_stat_ok(v) for v in lows + highs):
            minimum[field.name] = _stat_value(min(lows))
            maximum[field.name] = _stat_value(max(highs))
    return {"numRecords": num_rows, "minValues": minimum, "maxValues": maximum, "nullCount": null_count}


def _stat_ok(value: Any) -> bool:
    # Long strings would need Delta's truncation rules; leaving them out only costs pruning.
    return not isinstance(value, (bytes, str)) or len(value) <= 32


def _stat_value(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text.replace("+00:00", "Z") if "+00:00" in text else text
    return value


class DeltaSparkTables(LakeTables):
    """delta-spark backend for clusters with the Delta jars on the classpath."""

    def __init__(self, spark: SparkSession, lake: LakeSettings):
        super().__init__(spark, lake)
        if not delta_spark_available(spark):
            raise LakeError(
                "lake.backend is delta-spark but the Delta jars are not on the Spark classpath "
                "(io.delta.tables.DeltaTable not found); add them with spark.jars or use lake.backend: delta-rs"
            )

    def ensure_tables(self, tables: Iterable[str] | None = None) -> None:
        from delta.tables import DeltaTable

        self.check_layout(tables)
        for name in tables or TABLES:
            spec = table_spec(name)
            DeltaTable.createIfNotExists(self.spark).location(self.uri(name)).addColumns(spec.schema).execute()

    def read(self, table: str, version: int | None = None) -> DataFrame:
        spec = table_spec(table)
        # Pin the version now, so the DataFrame is one snapshot however late it runs.
        version = self.version(table) if version is None else version
        return self.spark.read.format("delta").option("versionAsOf", version).load(self.uri(table)).select(*spec.columns)

    def _commit(self, spec, df, mode, on, txn, user_metadata) -> CommitResult:
        if isinstance(df, pa.Table):
            df = self.spark.createDataFrame(df)
        before = self.version(spec.name)
        if mode == "merge":
            self._merge(spec, df, on, txn, user_metadata)
        else:
            writer = df.write.format("delta").mode(mode).option("userMetadata", user_metadata)
            if txn is not None:
                writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
            writer.save(self.uri(spec.name))
        after = self.version(spec.name)
        if after == before:
            return CommitResult(spec.name, None, skipped="no rows")
        return CommitResult(spec.name, after, source_rows=self._rows_written(spec.name, mode))

    def _delete(self, spec, keys, on, user_metadata) -> CommitResult:
        from delta.tables import DeltaTable

        before = self.version(spec.name)
        condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in on)
        conf = self.spark.conf
        conf.set("spark.databricks.delta.commitInfo.userMetadata", user_metadata)
        try:
            target = DeltaTable.forPath(self.spark, self.uri(spec.name))
            target.alias("t").merge(keys.alias("s"), condition).whenMatchedDelete().execute()
        finally:
            conf.unset("spark.databricks.delta.commitInfo.userMetadata")
        after = self.version(spec.name)
        if after == before:
            return CommitResult(spec.name, None, skipped="no rows")
        metrics = self._delta_rs_table(spec.name).history(1)[0].get("operationMetrics") or {}
        return CommitResult(spec.name, after, source_rows=int(metrics.get("numTargetRowsDeleted", 0)))

    def _rows_written(self, table: str, mode: str) -> int:
        """Rows the last commit took from its source, from Delta's operation metrics."""
        metrics = (self._delta_rs_table(table).history(1)[0].get("operationMetrics") or {})
        names = ["numTargetRowsInserted", "numTargetRowsUpdated"] if mode == "merge" else ["numOutputRows"]
        return sum(int(metrics.get(name, 0)) for name in names)

    def _merge(self, spec, updates, on, txn, user_metadata) -> None:
        from delta.tables import DeltaTable

        # One MERGE that deletes the replaced rows missing from `updates` and
        # upserts the rest, so group replacement is a single transaction.
        target = DeltaTable.forPath(self.spark, self.uri(spec.name))
        existing = self.read(spec.name)
        keys = list(spec.keys)
        stale = (
            existing.join(updates.select(*on).distinct(), list(on), "left_semi")
            .join(updates.select(*keys), keys, "left_anti")
            .withColumn("_delete", F.lit(True))
        )
        source = updates.withColumn("_delete", F.lit(False)).unionByName(stale)
        condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        conf = self.spark.conf
        conf.set("spark.databricks.delta.commitInfo.userMetadata", user_metadata)
        if txn is not None:
            conf.set("spark.databricks.delta.write.txnAppId", txn.app_id)
            conf.set("spark.databricks.delta.write.txnVersion", str(txn.version))
        try:
            (
                target.alias("t")
                .merge(source.alias("s"), condition)
                .whenMatchedDelete("s._delete")
                .whenMatchedUpdate(set={c: f"s.`{c}`" for c in spec.columns})
                .whenNotMatchedInsert("NOT s._delete", values={c: f"s.`{c}`" for c in spec.columns})
                .execute()
            )
        finally:
            for key in (
                "spark.databricks.delta.commitInfo.userMetadata",
                "spark.databricks.delta.write.txnAppId",
                "spark.databricks.delta.write.txnVersion",
            ):
                conf.unset(key)


def delta_spark_available(spark: SparkSession) -> bool:
    """True when the delta-spark jars (and Python package) can be used by this session."""
    try:
        import delta.tables  # noqa: F401
    except ImportError:
        return False
    try:
        spark.sparkContext._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
    except Exception:  # py4j surfaces ClassNotFoundException as a generic error
        return False
    return True


def open_lake(spark: SparkSession, lake: LakeSettings) -> LakeTables:
    """The table layer selected by ``lake.backend``."""
    backend = {"delta-rs": DeltaRsTables, "delta-spark": DeltaSparkTables}[lake.backend]
    return backend(spark, lake)
