"""Shared fixtures: one local Spark session for the whole run, a fresh lake per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def make_settings(root: Path, env: dict[str, str] | None = None):
    """Settings of conf/local.yaml with the lake under ``root``, plus INTERESTLAKE__ overrides."""
    from interestlake.settings import load_settings

    env = {"INTERESTLAKE__LAKE__ROOT": str(root), "INTERESTLAKE__SPARK__MASTER": "local[2]", **(env or {})}
    return load_settings(REPO / "conf" / "local.yaml", env=env)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local[2] session shared by every Spark test (starting one costs seconds)."""
    from interestlake.spark_session import build_spark_session

    settings = make_settings(
        tmp_path_factory.mktemp("unused-lake"), {"INTERESTLAKE__SPARK__CONF__spark.sql.shuffle.partitions": "4"}
    )
    session = build_spark_session(settings)
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path):
    """Settings whose lake lives in this test's temporary folder."""
    return make_settings(tmp_path / "lake")


@pytest.fixture
def lake(spark, settings):
    """The default (delta-rs) table layer over an empty lake with every table created."""
    from interestlake.lake.tables import open_lake

    tables = open_lake(spark, settings.lake)
    tables.ensure_tables()
    return tables


@pytest.fixture
def pipeline(spark, lake, settings):
    from interestlake.pipeline.refresh import Pipeline

    return Pipeline(spark, lake, settings)


@pytest.fixture(autouse=True)
def _offline():
    """Every test runs as CI does: no model hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
