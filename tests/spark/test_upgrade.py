"""`interestlake upgrade` on lakes written by the code of each earlier layout (tests/fixtures/old_lakes)."""

import tarfile
from pathlib import Path

import pytest

from interestlake import constants as C
from interestlake.lake.schemas import TABLES
from interestlake.pipeline.run import RunContext

from tests.conftest import make_settings
from tests.fixtures.old_lakes.build import LAYOUTS, write_landing

pytestmark = [pytest.mark.spark, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "old_lakes"
# Rows that must survive an upgrade: everything but the derived tables a layout change resets.
KEPT = (C.EVENTS, C.REVIEWS, C.ITEMS, C.QUARANTINE, C.TEXT_EMBEDDINGS, C.ITEM_EMBEDDINGS, C.RECOMMENDATIONS,
        C.PIPELINE_RUNS, C.LANDING_FILES, C.USER_TOPICS)
# What a refresh computes, compared without run ids, times of writing and file paths.
COMPARED = {
    C.EVENTS: ["event_id", "user_id", "item_id", "event_type", "ts", "text", "rating", "truncated"],
    C.REVIEWS: ["review_id", "user_id", "item_id", "rating", "text", "ts", "truncated"],
    C.ITEMS: ["item_id", "title", "description", "category", "price", "updated_at", "truncated"],
    C.ITEM_EMBEDDINGS: ["item_id", "encoder_version", "text_hash", "embedding"],
    C.USER_INTERESTS: ["user_id", "encoder_version", "long_term", "short_term", "interest", "decayed_sum",
                       "decayed_mass", "event_count", "review_count", "last_event_at", "recent"],
    C.RECOMMENDATIONS: ["user_id", "rank", "item_id", "score", "reason"],
    C.USER_TOPICS: ["user_id", "topic", "weight", "phrases", "mentions", "last_seen"],
}


def run(name, logical_date="2026-11-20T00:00:00Z"):
    return RunContext.create(name, logical_date)


def pipeline_over(spark, root):
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.refresh import Pipeline

    settings = make_settings(root)
    return Pipeline(spark, open_lake(spark, settings.lake), settings)


def snapshot(lake, table):
    """The compared columns of a table as a sorted list of dicts."""
    rows = [row.asDict(recursive=True) for row in lake.read(table).select(*COMPARED[table]).collect()]
    return sorted(rows, key=lambda row: [str(row[c]) for c in COMPARED[table][:2]])


def assert_same(actual, expected, table):
    """Rows equal column by column; floats (vectors too) within 1e-5, as two runs may sum in another order."""
    assert len(actual) == len(expected), table

    def close(a, b):
        if isinstance(a, float) and isinstance(b, float):
            return abs(a - b) <= 1e-5
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        return a == b

    for got, want in zip(actual, expected):
        differing = [column for column in COMPARED[table] if not close(got[column], want[column])]
        assert not differing, (table, differing, {c: (got[c], want[c]) for c in differing if not isinstance(got[c], list)})


@pytest.fixture(scope="module")
def fresh(spark, tmp_path_factory):
    """A lake built by this version from the landing files every fixture lake ingested."""
    root = tmp_path_factory.mktemp("fresh-lake")
    write_landing(root / "landing")
    pipeline = pipeline_over(spark, root)
    pipeline.lake.ensure_tables()
    pipeline.refresh(run("fresh"))
    return {table: snapshot(pipeline.lake, table) for table in COMPARED}


def test_every_layout_has_a_fixture():
    assert sorted(p.name.removesuffix(".tar.gz") for p in FIXTURES.glob("*.tar.gz")) == sorted(LAYOUTS)
    assert sum(p.stat().st_size for p in FIXTURES.glob("*.tar.gz")) < 500_000


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_upgrade_brings_the_layout_to_this_version_keeping_every_row(spark, tmp_path, layout, fresh):
    from interestlake.lake.tables import LakeError
    from interestlake.lake.upgrade import apply, plan
    from interestlake.pipeline.upgrade import upgrade

    with tarfile.open(FIXTURES / f"{layout}.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    pipeline = pipeline_over(spark, tmp_path / "lake")
    lake = pipeline.lake
    # Every command opens the lake through ensure_tables: refused, with the way forward.
    with pytest.raises(LakeError, match=r"earlier version of interestlake .* run `interestlake upgrade`"):
        lake.ensure_tables()
    stored = lake.stored_columns()
    rows = {table: lake.stored_rows(table) for table in KEPT if stored[table] is not None}
    versions = {table: lake.version(table) for table in rows}

    dry = upgrade(pipeline, run("dry"), dry_run=True)
    assert dry.counts["steps"] > 0 and not dry.commits
    assert {table: lake.version(table) for table in rows} == versions

    # Killed half-way: each step is one commit, so the lake is part upgraded, part not ...
    steps = plan(stored)
    for step in steps[: len(steps) // 2]:
        apply(lake, step, "killed")
    # ... and the next upgrade finishes it.
    report = upgrade(pipeline, run("upgrade"))
    assert lake.stored_columns() == {name: spec.columns for name, spec in TABLES.items()}
    for table, count in rows.items():
        kept = lake.read(table).count() - (1 if table == C.PIPELINE_RUNS else 0)  # the upgrade's own row
        assert kept == count, table
    [recorded] = lake.read_rows(C.PIPELINE_RUNS, filters=[("stage", "=", "upgrade")])
    assert recorded["status"] == "succeeded" and recorded["note"] == report.note
    if C.EVENTS in rows:
        assert lake.read(C.EVENTS).filter("truncated IS NULL").count() == 0

    # Idempotent: nothing left to do, nothing written.
    versions = {table: lake.version(table) for table in TABLES}
    assert upgrade(pipeline, run("again")).counts["steps"] == 0
    assert {table: lake.version(table) for table in TABLES} == versions

    lake.ensure_tables()
    pipeline.refresh(run("after-upgrade"))
    for table, expected in fresh.items():
        assert_same(snapshot(lake, table), expected, table)


def test_a_current_or_new_lake_needs_no_upgrade(lake):
    from interestlake.lake.upgrade import layout_differences, plan

    assert plan(lake.stored_columns()) == [] and layout_differences(lake.stored_columns()) == []
    assert plan({name: None for name in TABLES}) == []
    # A table missing from an otherwise current lake is an old layout too.
    partial = {**lake.stored_columns(), C.USER_TOPICS: None}
    assert layout_differences(partial) == ["user_topics is missing"]
    assert [(s.table, s.action) for s in plan(partial)] == [
        ("user_interests", "recompute"), ("recommendations", "recompute"), ("user_topics", "create")]


def test_commands_on_an_old_lake_say_to_run_upgrade(spark, tmp_path, monkeypatch, capsys):
    from interestlake.cli import main
    from interestlake.lake.status import lake_status

    with tarfile.open(FIXTURES / "v4-truncated.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    monkeypatch.setenv("INTERESTLAKE__LAKE__ROOT", str(tmp_path / "lake"))
    conf = str(Path(__file__).resolve().parents[2] / "conf" / "local.yaml")
    for command in (["refresh"], ["recommend"], ["maintain"], ["forget", "u1"], ["sql", "SELECT 1", "--engine", "spark"],
                    ["sql", "SELECT count(*) FROM events"]):
        capsys.readouterr()
        assert main([*command, "--conf", conf, "-q"]) == 1, command
        [line] = capsys.readouterr().err.strip().splitlines()
        assert "user_topics is missing" in line and "run `interestlake upgrade`" in line, command
    # `status` reads without Spark and says the same as its first problem (exit 1: unhealthy).
    problems = lake_status(make_settings(tmp_path / "lake")).problems
    assert "run `interestlake upgrade`" in problems[0]
    # The dry run lists the steps and writes nothing.
    assert main(["upgrade", "--dry-run", "--conf", conf, "-q"]) == 0
    assert "user_topics: create" in capsys.readouterr().out
    assert main(["status", "--conf", conf, "-q"]) == 1
