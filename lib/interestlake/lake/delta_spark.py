"""The delta-spark backend, for clusters with the Delta jars on the Spark classpath.

Writes and merges go through delta-spark; the commits that only delta-rs can make (a commit
of metadata alone, a layout replaced with its schema) go through ``DeltaRsTables``, which
writes the same Delta tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interestlake.lake.base import CommitResult, LakeTables, Txn
from interestlake.lake.delta_rs import DeltaRsTables
from interestlake.lake.errors import LakeError
from interestlake.lake.schemas import TABLES, table_spec
from interestlake.settings import LakeSettings


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

    def replace_layout(self, table: str, df: DataFrame, metadata: Mapping | None = None) -> CommitResult:
        return DeltaRsTables(self.spark, self.lake).replace_layout(table, df, metadata)

    def record_progress(self, table: str, *, txn: Txn | None = None, metadata: Mapping | None = None) -> CommitResult:
        return DeltaRsTables(self.spark, self.lake).record_progress(table, txn=txn, metadata=metadata)

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
