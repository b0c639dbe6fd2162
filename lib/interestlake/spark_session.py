"""Builds the Spark session a job runs in, from settings alone."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pyspark.sql import SparkSession

from interestlake.settings import Settings

# Properties the lake layer relies on; conf may not turn them off.
_REQUIRED_CONF = {
    # Delta stores timestamps as UTC microseconds; Spark's INT96 default is not valid Delta.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
}

_DELTA_SPARK_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def build_spark_session(settings: Settings, master: str | None = None, jobs: Sequence[str] = ()) -> SparkSession:
    """Returns the Spark session described by ``settings.spark``.

    Args:
        settings: Loaded settings; ``spark.conf`` is applied as is.
        master: Overrides ``spark.master`` (the CLI's ``--master``).
        jobs: The jobs (stages, ``maintain``) this application runs: their
            ``spark.stage_conf`` is applied too (e.g. GPUs for ``encode``).

    Returns:
        A new or the already active session (``getOrCreate`` semantics).
    """
    conf = settings.spark.conf_for(jobs)
    # PySpark hands executors the interpreter of PYSPARK_PYTHON, read when the context
    # starts; only spark-submit turns spark.pyspark.python into it, so a packed venv
    # named in the conf file (./environment/bin/python) would be ignored by the CLI.
    if conf.get("spark.pyspark.python"):
        os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
    # Otherwise executors run the driver's interpreter, or pandas UDFs fail with a
    # version mismatch; spark-submit and clusters set these themselves.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # The encoder must never reach for a model hub, on the driver or on executors.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    builder = SparkSession.builder.appName(settings.spark.app_name)
    # Under spark-submit (it starts the JVM first and hands us its gateway) the
    # submit command's --master decides; otherwise --master, then the conf.
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master or settings.spark.master)
    if settings.lake.backend == "delta-spark":
        conf = {**_DELTA_SPARK_CONF, **conf}
    conf.update(_REQUIRED_CONF)
    conf.setdefault("spark.executorEnv.HF_HUB_OFFLINE", "1")
    conf.setdefault("spark.executorEnv.TRANSFORMERS_OFFLINE", "1")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    return spark


@contextmanager
def spark_session(settings: Settings, master: str | None = None, jobs: Sequence[str] = ()) -> Iterator[SparkSession]:
    """``build_spark_session`` for the length of a block, stopped afterwards if the block started it.

    A session that was already active (a test's, a notebook's) is reused and left running.
    """
    owned = SparkSession.getActiveSession() is None
    spark = build_spark_session(settings, master, jobs)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()
