"""Warehouse-style SQL over the lake tables: in this process by default, on Spark on request.

The default engine is DuckDB, embedded in this process: each lake table is a view
of its own name over the data files of the table's latest Delta version (the file
list and the schema come from the Delta log, read with delta-rs), so a query reads
one consistent snapshot per table, reads only the columns and row groups it needs,
and starts no JVM. The connection reads files under the lake root only.

The ``spark`` engine registers the same names as Spark temporary views
(``LakeTables.register_views``) and runs Spark SQL, for lakes too big for one process.
It is handed an open table layer: the command (``cli.py``) opens the session with
``pipeline.refresh.open_pipeline``, as every Spark command does, so this layer reaches
nothing above it.

Both engines return the same ``QueryResult`` (timestamps as naive UTC datetimes, as
PySpark gives them on a UTC driver; vectors as lists) and raise ``QueryError`` with
one line naming the problem for a query that cannot run as written.

Both refuse a lake written by an earlier table layout with the one line of every other
command, saying to run ``interestlake upgrade`` (``LakeError``).

Nothing here imports PySpark unless the Spark engine is asked for, or the lake's
columns differ from this version's layout (to name what differs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from interestlake import constants as C
from interestlake.lake.errors import LakeError
from interestlake.lake.uris import readable_uri
from interestlake.settings import LakeSettings

if TYPE_CHECKING:
    from interestlake.lake.base import LakeTables

ENGINES = ("duckdb", "spark")


class QueryError(ValueError):
    """A query that cannot run as written (syntax, unknown table or column, types): one line."""


class LakeReadError(RuntimeError):
    """The lake's files could not be read (missing, unreadable): the lake is the problem, not the query."""


@dataclass(frozen=True)
class QueryResult:
    """Column names in order, and at most ``limit`` rows as column -> value."""

    columns: list[str]
    rows: list[dict[str, Any]]
    # True when the query had more rows than the limit.
    truncated: bool


def unknown_table_message(name: str, available: Sequence[str]) -> str:
    """The one line of both engines for a table that is not in the lake."""
    tables = ", ".join(available) if available else "none yet (run `interestlake ingest` or any stage first)"
    return f"unknown table {name!r}; the lake's tables are: {tables}"


class LakeSnapshot:
    """The lake's Delta tables, each at its latest version when first asked for, read in this process.

    Args:
        lake: Lake settings (root, storage options).
    """

    def __init__(self, lake: LakeSettings):
        self.lake = lake
        self._tables: dict[str, Any] = {}
        self._connection = None

    def table(self, name: str):
        """The ``deltalake.DeltaTable`` of a lake table, or None when the table does not exist yet."""
        if name not in self._tables:
            from deltalake import DeltaTable
            from deltalake.exceptions import TableNotFoundError

            try:
                self._tables[name] = DeltaTable(self.lake.table_uri(name), storage_options=self.lake.storage_options or None)
            except TableNotFoundError:
                self._tables[name] = None
        return self._tables[name]

    @property
    def available(self) -> list[str]:
        """Names of the lake tables that exist, in the order of ``constants.LAKE_TABLES``."""
        return [name for name in C.LAKE_TABLES if self.table(name) is not None]

    def connection(self):
        """A DuckDB connection with every existing lake table registered under its name.

        It reads files under the lake root only: anything else (other files, COPY to
        other places, extensions) is refused.
        """
        import duckdb

        if self._connection is None:
            connection = duckdb.connect(":memory:")
            if "://" not in self.lake.root:
                connection.execute("SET allowed_directories = [?]", [self.lake.root.rstrip("/") + "/"])
            connection.execute("SET enable_external_access = false")
            connection.execute("SET TimeZone = 'UTC'")
            for name in self.available:
                register(connection, name, self.table(name))
            self._connection = connection
        return self._connection

    def old_layout(self) -> str | None:
        """The one line saying to run ``interestlake upgrade`` when an earlier version wrote the lake, else None.

        A lake at this version's layout is told by a fingerprint of its stored columns,
        without importing Spark; only a lake whose columns differ imports the declared
        schemas, to name what differs.
        """
        from interestlake.lake.layout import maybe_outdated

        stored = {name: None if self.table(name) is None else [f.name for f in self.table(name).schema().fields]
                  for name in C.LAKE_TABLES}
        if not maybe_outdated(stored):
            return None
        from interestlake.lake.upgrade import old_layout_message

        return old_layout_message(self.lake.root, stored)

    def register_version(self, name: str, version: int, view: str) -> bool:
        """Registers an older version of a table as the view ``view``; False when the version is gone."""
        from deltalake import DeltaTable

        try:
            table = DeltaTable(self.lake.table_uri(name), version=version, storage_options=self.lake.storage_options or None)
        except Exception:  # delta-rs has several errors for a version cleaned up from the log
            return False
        register(self.connection(), view, table)
        return True

    def query(self, sql: str, limit: int | None = None) -> QueryResult:
        """Runs one SQL statement with DuckDB over the lake's tables.

        Args:
            sql: The statement (DuckDB's SQL dialect).
            limit: Keep at most this many rows (None: all).

        Raises:
            QueryError: The statement cannot run as written; the message is one line.
            LakeReadError: A table's files cannot be read (the lake, not the query, is the problem).
        """
        import duckdb

        try:
            cursor = self.connection().execute(sql)
            columns = [column[0] for column in cursor.description or []]
            fetched = cursor.fetchall() if limit is None else cursor.fetchmany(limit + 1)
        except (duckdb.ProgrammingError, duckdb.DataError, duckdb.NotSupportedError, duckdb.PermissionException) as exc:
            raise QueryError(self._message(exc)) from None
        except duckdb.Error as exc:
            raise LakeReadError(f"the lake at {self.lake.root} could not be read: {_first_line(str(exc))}") from None
        truncated = limit is not None and len(fetched) > limit
        rows = [dict(zip(columns, map(_plain, row))) for row in fetched[:limit]]
        return QueryResult(columns, rows, truncated)

    def _message(self, exc: Exception) -> str:
        missing = re.search(r"Table with name (\S+) does not exist", str(exc))
        if missing:
            return unknown_table_message(missing.group(1), self.available)
        return _first_line(str(exc))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def run_query(lake: LakeSettings, sql: str, limit: int) -> QueryResult:
    """Runs ``sql`` over the lake with DuckDB, in this process (the default engine of ``ENGINES``)."""
    snapshot = LakeSnapshot(lake)
    try:
        # As the Spark engine (and every other command) refuses an old lake: its tables
        # would answer with the columns of another version.
        outdated = snapshot.old_layout()
        if outdated:
            raise LakeError(outdated)
        return snapshot.query(sql, limit)
    finally:
        snapshot.close()


def spark_query(tables: LakeTables, sql: str, limit: int) -> QueryResult:
    """Runs ``sql`` with Spark SQL over the lake tables of an open table layer (the ``spark`` engine).

    The caller opens the session and the table layer (``pipeline.refresh.open_pipeline``, which
    also refuses a lake of an earlier layout); this only registers the views and runs the query.
    """
    from pyspark.errors import PySparkException

    names = tables.register_views()
    try:
        result = tables.spark.sql(sql)
        columns = result.columns
        fetched = [row.asDict(recursive=True) for row in result.limit(limit + 1).collect()]
    except PySparkException as exc:
        condition = exc.getCondition() if hasattr(exc, "getCondition") else None
        if condition == "TABLE_OR_VIEW_NOT_FOUND":
            name = (exc.getMessageParameters() or {}).get("relationName", "?").replace("`", "")
            raise QueryError(unknown_table_message(name, names)) from None
        raise QueryError(_first_line(str(exc))) from None
    # PySpark gives timestamps as naive datetimes in this process's local time zone.
    rows = [{column: _plain(row[column], naive_is_local=True) for column in columns} for row in fetched[:limit]]
    return QueryResult(columns, rows, len(fetched) > limit)


def register(connection, name: str, table) -> None:
    """Registers one version of a Delta table (a ``deltalake.DeltaTable``) as the DuckDB view ``name``."""
    files = [readable_uri(uri) for uri in table.file_uris()]
    fields = json.loads(table.schema().to_json())["fields"]
    view = f"CREATE VIEW {_identifier(name)} AS SELECT "
    if _needs_delta_reader(table) or any("://" in path for path in files):
        connection.register(name, _arrow(table, files))
    elif not files:
        typed = (f"CAST(NULL AS {_duckdb_type(field['type'])}) AS {_identifier(field['name'])}" for field in fields)
        connection.execute(view + ", ".join(typed) + " WHERE false")
    else:
        # DuckDB's own Parquet reader over the snapshot's file list: it prunes row groups
        # by their statistics and needs neither pyarrow nor pandas (start-up time).
        columns = ", ".join(_identifier(field["name"]) for field in fields)
        paths = ", ".join(_literal(path) for path in files)
        connection.execute(view + f"{columns} FROM read_parquet([{paths}], union_by_name = true)")


def _arrow(table, files: list[str]):
    """An object store's files, or a snapshot that plain Parquet reads would get wrong, as Arrow."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    if _needs_delta_reader(table):
        # Deletion vectors or column mapping (options of a delta-spark writer): delta-rs's
        # own engine applies them.
        return pa.table(table.scan())
    # Over the file list, not delta-rs's to_pyarrow_dataset(): that one turns a column
    # without min/max statistics (user ids, texts) into a filter that matches nothing.
    filesystem = pafs.FileSystem.from_uri(files[0])[0]
    paths = [pafs.FileSystem.from_uri(uri)[1] for uri in files]
    return ds.dataset(paths, schema=pa.schema(table.schema().to_arrow()), format="parquet", filesystem=filesystem)


def _needs_delta_reader(table) -> bool:
    features = set(table.protocol().reader_features or ())
    return bool(features & {"deletionVectors", "columnMapping"})


_DUCKDB_TYPES = {
    "string": "VARCHAR", "long": "BIGINT", "integer": "INTEGER", "short": "SMALLINT", "byte": "TINYINT",
    "float": "FLOAT", "double": "DOUBLE", "boolean": "BOOLEAN", "binary": "BLOB", "date": "DATE",
    "timestamp": "TIMESTAMPTZ", "timestamp_ntz": "TIMESTAMP",
}


def _duckdb_type(delta_type: str | dict) -> str:
    """The DuckDB type of a Delta schema type (its JSON form), for the columns of an empty table."""
    if isinstance(delta_type, str):
        return delta_type.upper() if delta_type.startswith("decimal") else _DUCKDB_TYPES[delta_type]
    kind = delta_type["type"]
    if kind == "array":
        return f"{_duckdb_type(delta_type['elementType'])}[]"
    if kind == "map":
        return f"MAP({_duckdb_type(delta_type['keyType'])}, {_duckdb_type(delta_type['valueType'])})"
    fields = (f"{_identifier(field['name'])} {_duckdb_type(field['type'])}" for field in delta_type["fields"])
    return f"STRUCT({', '.join(fields)})"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(message: str) -> str:
    """The first non-empty line of an engine's message (Spark's start with a newline)."""
    return next((line.strip() for line in message.splitlines() if line.strip()), message.strip() or "query failed")


def _plain(value: Any, naive_is_local: bool = False) -> Any:
    """Engine values as the CLI prints them: timestamps as naive UTC, nested values recursively."""
    if isinstance(value, datetime) and (value.tzinfo is not None or naive_is_local):
        # astimezone() reads a naive datetime as local time.
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    if isinstance(value, list):
        return [_plain(v, naive_is_local) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, naive_is_local) for k, v in value.items()}
    return value
