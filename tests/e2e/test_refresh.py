"""End to end: generated sample -> refresh -> tables users and analysts rely on."""

import json
import os
import subprocess
import sys

import pytest

from interestlake import constants as C
from interestlake.datasets.sample import generate_sample
from interestlake.lake.schemas import TABLES
from interestlake.pipeline.run import RunContext

from tests.conftest import REPO, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
USERS, ITEMS = 25, 30


@pytest.fixture(scope="module")
def refreshed(spark, tmp_path_factory):
    """One refresh over a small generated sample, shared by the tests of this module."""
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.refresh import Pipeline

    root = tmp_path_factory.mktemp("e2e") / "lake"
    settings = make_settings(root)
    sample = generate_sample(settings.lake.landing_uri, seed=7, n_users=USERS, n_items=ITEMS, days=30)
    lake = open_lake(spark, settings.lake)
    lake.ensure_tables()
    pipeline = Pipeline(spark, lake, settings)
    reports = pipeline.refresh(RunContext.create("e2e-1", "2026-11-02T00:00:00Z"))
    return pipeline, sample, reports


def test_every_user_with_events_gets_exactly_k_new_items(refreshed):
    pipeline, sample, _ = refreshed
    lake, k = pipeline.lake, pipeline.settings.recommend.k
    users_with_events = {r.user_id for r in lake.read(C.EVENTS).select("user_id").distinct().collect()}
    assert len(users_with_events) == sample.users
    recs = lake.read(C.RECOMMENDATIONS).collect()
    by_user = {}
    for row in recs:
        by_user.setdefault(row.user_id, []).append(row)
    assert set(by_user) == users_with_events
    owned = {(r.user_id, r.item_id) for r in lake.read(C.EVENTS).filter("event_type = 'purchase'").collect()}
    owned |= {(r.user_id, r.item_id) for r in lake.read(C.REVIEWS).collect()}
    catalog = {r.item_id for r in lake.read(C.ITEMS).collect()}
    for user, rows in by_user.items():
        assert sorted(r.rank for r in rows) == list(range(1, k + 1)), user
        assert len({r.item_id for r in rows}) == k
        assert not {(user, r.item_id) for r in rows} & owned
        assert {r.item_id for r in rows} <= catalog
        assert all(r.reason and r.run_id == "e2e-1" for r in rows)


def test_refresh_counts_match_the_landing_files(refreshed):
    pipeline, sample, reports = refreshed
    lake = pipeline.lake
    assert [r.stage for r in reports] == ["ingest", "encode", "interests", "recommend"]
    assert lake.read(C.EVENTS).count() == sample.events
    assert lake.read(C.REVIEWS).count() == sample.reviews
    assert lake.read(C.ITEMS).count() == sample.items
    assert lake.read(C.QUARANTINE).count() == 0
    assert lake.read(C.ITEM_EMBEDDINGS).count() == sample.items
    assert lake.read(C.USER_INTERESTS).count() == sample.users


def test_second_refresh_without_new_input_changes_nothing(refreshed):
    pipeline, _, _ = refreshed
    lake = pipeline.lake
    data_tables = [name for name in TABLES if name != C.PIPELINE_RUNS]
    before = {name: (lake.version(name), sorted(map(repr, lake.read(name).collect()))) for name in data_tables}
    reports = pipeline.refresh(RunContext.create("e2e-2", "2026-11-02T00:05:00Z"))
    assert not any(c.committed for r in reports for c in r.commits)
    after = {name: (lake.version(name), sorted(map(repr, lake.read(name).collect()))) for name in data_tables}
    assert after == before
    # Only the run log grows: one row per stage of the second run, which wrote nothing.
    second = lake.read(C.PIPELINE_RUNS).filter("run_id = 'e2e-2'").collect()
    assert sorted(r.stage for r in second) == ["encode", "ingest", "interests", "recommend"]
    assert all(r.written_versions == {} for r in second)


def test_cli_sql_json_prints_only_json(refreshed, tmp_path):
    pipeline, sample, _ = refreshed
    env = {**os.environ, "INTERESTLAKE__LAKE__ROOT": pipeline.settings.lake.root,
           "INTERESTLAKE__SPARK__MASTER": "local[1]"}
    query = "SELECT count(DISTINCT user_id) AS users, count(*) AS n FROM recommendations"
    done = subprocess.run(
        [sys.executable, "-m", "interestlake.cli", "sql", "--conf", str(REPO / "conf" / "local.yaml"), "--json", query],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [{"users": sample.users, "n": sample.users * pipeline.settings.recommend.k}]


def test_cli_reports_bad_settings_and_bad_sql_without_a_traceback(refreshed, tmp_path):
    pipeline, _, _ = refreshed
    env = {**os.environ, "INTERESTLAKE__LAKE__ROOT": pipeline.settings.lake.root,
           "INTERESTLAKE__SPARK__MASTER": "local[1]"}
    bad_conf = subprocess.run(
        [sys.executable, "-m", "interestlake.cli", "refresh"],
        capture_output=True, text=True, env={**env, "INTERESTLAKE__RECOMMEND__K": "zero"}, timeout=120,
        cwd=REPO,
    )
    assert bad_conf.returncode == 2
    assert "INTERESTLAKE__RECOMMEND__K" in bad_conf.stderr and "Traceback" not in bad_conf.stderr
    bad_sql = subprocess.run(
        [sys.executable, "-m", "interestlake.cli", "sql", "--json", "SELECT nope FROM recommendations"],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO,
    )
    assert bad_sql.returncode == 2 and bad_sql.stdout == ""
    assert "nope" in bad_sql.stderr and "Traceback" not in bad_sql.stderr
