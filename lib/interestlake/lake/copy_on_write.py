"""Copy-on-write writes of the delta-rs backend: staged data files and the files a write rewrites.

A write first stages its rows as Parquet files under the table root (``stage_files``; the
driver reads their footers into Delta add actions with statistics). A merge or a delete then
rewrites each live file that holds a replaced key, without those rows
(``rewrite_touched_files``), and the backend commits the staged files and the removals
as one transaction. Nothing is committed here.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from interestlake.lake.arrow_reads import key_of
from interestlake.lake.schemas import PERSONAL_COLUMNS, TableSpec

log = logging.getLogger(__name__)


def stage_files(spec: TableSpec, table_uri: str, df: DataFrame | pa.Table) -> StagedFiles:
    """Executors (the driver, for an Arrow table) write Parquet under the table root; the driver reads the footers."""
    relative_dir = _staging_dir()
    target = f"{table_uri.rstrip('/')}/{relative_dir}"
    try:
        if isinstance(df, pa.Table):
            _write_parquet(df, target)
        else:
            df.write.mode("errorifexists").parquet(target)
    except Exception:
        # A write that failed half-way (a full disk) leaves no stray Parquet files beside the table's.
        StagedFiles([target], [], 0, []).discard()
        raise
    return StagedFiles.collect(spec, target, relative_dir)


def rewrite_touched_files(
    spark: SparkSession, spec: TableSpec, table_uri: str, snapshot, staged: StagedFiles, on: Sequence[str],
    local: bool = False,
) -> tuple[StagedFiles | None, list[tuple[str, int]]]:
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
    actions = pa.table(snapshot.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
    if not actions:
        return None, []
    root = snapshot.table_uri.rstrip("/")
    relative_dir = _staging_dir()
    target = f"{table_uri.rstrip('/')}/{relative_dir}"
    listed = [(f"{root}/{unquote(a['path'])}", a["path"], a["size_bytes"]) for a in actions]
    copy = _copy_without_keys(list(on), staged.paths, target)
    try:
        if local:
            files = pa.RecordBatch.from_pylist([dict(zip(("uri", "path", "size"), row)) for row in listed])
            touched = [(row["path"], row["size"]) for out in copy(iter([files])) for row in out.to_pylist()]
        else:
            files = spark.createDataFrame(listed, "uri string, path string, size long")
            tasks = max(1, min(len(actions), spark.sparkContext.defaultParallelism * 4))
            touched = [(row.path, row.size) for row in files.repartition(tasks).mapInArrow(copy, "path string, size long").collect()]
        rewritten = StagedFiles.collect(spec, target, relative_dir)
    except Exception:
        StagedFiles([target], [], 0, []).discard()
        raise
    if not touched:
        rewritten.discard()
        return None, []
    return rewritten, touched


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


def _copy_without_keys(on: list[str], key_files: list[str], target: str):
    """Builds the executor function of ``rewrite_touched_files`` (kept free of Spark objects)."""

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
                    replaced = pa.chunked_array([key_of(read(f, on), on) for f in key_files]).combine_chunks().unique()
                hit = pc.is_in(key_of(read(uri, on), on), value_set=replaced)
                if not pc.any(hit).as_py():
                    continue
                _write_parquet(read(uri).filter(pc.invert(hit)), target)
                touched["path"].append(path)
                touched["size"].append(size)
            yield pa.RecordBatch.from_pydict(touched, schema=pa.schema([("path", pa.string()), ("size", pa.int64())]))

    return run


@dataclass
class StagedFiles:
    """Data files written by Spark jobs and not yet committed."""

    targets: list[str]
    add_actions: list
    rows: int
    paths: list[str]

    def plus(self, other: StagedFiles) -> StagedFiles:
        return StagedFiles(
            self.targets + other.targets, self.add_actions + other.add_actions, self.rows + other.rows,
            self.paths + other.paths,
        )

    @classmethod
    def collect(cls, spec: TableSpec, target: str, relative_dir: str) -> StagedFiles:
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
