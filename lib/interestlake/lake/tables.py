"""The table layer's entry point: ``open_lake`` and the names its callers use.

Code above the lake layer imports the table layer from here (or from ``interestlake.lake``);
the parts live by concern: the interface and its types in ``lake/base.py``, the backends in
``lake/delta_rs.py`` and ``lake/delta_spark.py``, the Delta log and change reads in
``lake/delta_log.py``, the driver reads in ``lake/arrow_reads.py``, copy-on-write in
``lake/copy_on_write.py``, scratch folders in ``lake/scratch.py``.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from interestlake.lake.base import CommitResult, LakeTables, Txn
from interestlake.lake.delta_rs import DeltaRsTables
from interestlake.lake.delta_spark import DeltaSparkTables, delta_spark_available
from interestlake.lake.errors import LakeConflictError, LakeError, LakeHistoryGone, storage_failure
from interestlake.settings import LakeSettings

__all__ = [
    "CommitResult",
    "DeltaRsTables",
    "DeltaSparkTables",
    "LakeConflictError",
    "LakeError",
    "LakeHistoryGone",
    "LakeTables",
    "Txn",
    "delta_spark_available",
    "open_lake",
    "storage_failure",
]


def open_lake(spark: SparkSession, lake: LakeSettings) -> LakeTables:
    """The table layer selected by ``lake.backend``."""
    backend = {"delta-rs": DeltaRsTables, "delta-spark": DeltaSparkTables}[lake.backend]
    return backend(spark, lake)
