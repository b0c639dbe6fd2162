"""Builds the Spark session a job runs in, from settings alone."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
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
    quiet = settings.spark.log_level == "OFF"
    # A JVM this process starts (not spark-submit's, not a running one) inherits stderr.
    launching = "PYSPARK_GATEWAY_PORT" not in os.environ and SparkSession.getActiveSession() is None
    with _jvm_output_hidden(quiet and launching):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    if quiet:
        # PySpark logs every failed query's Java stack trace as a JSON line of its own (at
        # ERROR) before raising it; the exception the caller handles says the same in one line.
        from pyspark.logger import PySparkLogger

        for name in _PYSPARK_ERROR_LOGGERS:
            PySparkLogger.getLogger(name).setLevel(logging.CRITICAL + 1)
    return spark


_PYSPARK_ERROR_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


@contextmanager
def _jvm_output_hidden(hide: bool) -> Iterator[None]:
    """Points stderr at a temporary file while the JVM starts, so the JVM keeps that file as its stderr.

    What Spark and the JVM print before ``setLogLevel`` can act (the JVM's incubator-module
    notice, log4j's start-up lines, the hostname and native-hadoop warnings) then never reaches
    the terminal. Should the JVM fail to start, what it printed is shown after all.
    """
    if not hide:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextmanager
def spark_session(settings: Settings, master: str | None = None, jobs: Sequence[str] = ()) -> Iterator[SparkSession]:
    """``build_spark_session`` for the length of a block, stopped afterwards if the block started it.

    A session that was already active (a test's, a notebook's) is reused and left running.
    """
    # The process's SparkContext, not getActiveSession(): the active session is per thread, and a
    # block run in another thread (the stream's) must not stop a session its process already had.
    from pyspark import SparkContext

    owned = SparkContext._active_spark_context is None
    spark = build_spark_session(settings, master, jobs)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()
