"""The delta-rs backend (the default): Spark (or, for a small batch, the driver) writes Parquet, delta-rs commits it.

Needs no Delta jars. Merges and deletes are copy-on-write (``lake/copy_on_write.py``);
each write is one delta-rs transaction with its application transaction id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame

from interestlake.lake.base import CommitResult, LakeTables, Txn, commit_metadata, conform
from interestlake.lake.copy_on_write import StagedFiles, rewrite_touched_files, stage_files
from interestlake.lake.errors import LakeConflictError
from interestlake.lake.schemas import TABLES, arrow_schema, table_spec


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
        from deltalake.transaction import CommitProperties

        spec = table_spec(table)
        source = pa.Table.from_pylist([dict(r) for r in rows], schema=arrow_schema(spec.schema))
        user_metadata = commit_metadata(metadata)
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
        staged = stage_files(spec, self.uri(spec.name), df)
        source_rows = staged.rows
        removed: list[tuple[str, int]] = []
        if mode == "merge" and staged.rows:
            try:
                rewritten, removed = rewrite_touched_files(
                    self.spark, spec, self.uri(spec.name), snapshot, staged, on, local=isinstance(df, pa.Table)
                )
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
            rewritten, removed = rewrite_touched_files(
                self.spark, spec, self.uri(spec.name), snapshot, StagedFiles([], [], 0, paths), on
            )
        if not removed:
            return CommitResult(spec.name, None, skipped="no rows")
        staged = rewritten or StagedFiles([], [], 0, [])
        records = pa.table(snapshot.get_add_actions(flatten=True)).select(["path", "num_records"]).to_pylist()
        held = {r["path"]: r["num_records"] or 0 for r in records}
        deleted = sum(held.get(path, 0) for path, _ in removed) - staged.rows
        return self._commit_files(spec, snapshot, staged, removed, "delete", None, user_metadata, deleted)

    def replace_layout(self, table: str, df: DataFrame, metadata: Mapping | None = None) -> CommitResult:
        spec = table_spec(table)
        return self._commit(spec, conform(df, spec), "overwrite", None, None, commit_metadata(metadata))

    def record_progress(self, table: str, *, txn: Txn | None = None, metadata: Mapping | None = None) -> CommitResult:
        if self._already_committed(table, txn):
            return CommitResult(table, None, skipped="already committed")
        return self._commit_files(
            table_spec(table), self._delta_rs_table(table), StagedFiles([], [], 0, []), [], "append", txn,
            commit_metadata(metadata), 0,
        )

    def _moved_past(self, spec, version: int) -> bool:
        """Whether the table has a version after ``version`` (True when that cannot be read: keep the files)."""
        try:
            return self._delta_rs_table(spec.name).version() > version
        except Exception:  # noqa: BLE001 - unreadable log: never delete files a commit may name
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
        except Exception:
            # Any other failure (a full disk while writing the log entry): the staged files are
            # deleted unless the table moved past the snapshot, i.e. the commit landed after all.
            if not self._moved_past(spec, snapshot.version()):
                staged.discard()
            raise
        snapshot.update_incremental()
        return CommitResult(
            spec.name, snapshot.version(), staged.rows, len(staged.add_actions), len(removed), source_rows=source_rows
        )
