"""Analysts and operators on a refreshed lake: `interestlake sql` (both engines), `interestlake status`,
the reading snippets of docs/sql.md.

One refresh over a small generated sample serves the module; tests that change the
lake work on a copy of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest

from interestlake import constants as C
from interestlake.cli import main
from interestlake.datasets.sample import generate_sample
from interestlake.lake.status import lake_status
from interestlake.pipeline.run import RunContext, StageReport

from tests.conftest import REPO, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
USERS, ITEMS = 20, 25
CONF = str(REPO / "conf" / "local.yaml")
USER = "u-0001"
# The page whose section "Reading the outputs elsewhere" holds the reading snippets.
READING_PAGE = REPO / "docs" / "sql.md"


@pytest.fixture(scope="module")
def demo(spark, tmp_path_factory):
    """A lake named `lakehouse` (as the reading snippets call it) after one refresh."""
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.refresh import Pipeline

    root = tmp_path_factory.mktemp("analysts") / "lakehouse"
    settings = make_settings(root)
    sample = generate_sample(settings.lake.landing_uri, seed=11, n_users=USERS, n_items=ITEMS, days=20)
    lake = open_lake(spark, settings.lake)
    lake.ensure_tables()
    Pipeline(spark, lake, settings).refresh(RunContext.create("demo-1", "2026-11-02T00:00:00Z"))
    return settings, sample


def _env(settings, **extra) -> dict[str, str]:
    return {**os.environ, "INTERESTLAKE__LAKE__ROOT": settings.lake.root, "INTERESTLAKE__SPARK__MASTER": "local[1]",
            "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")]), **extra}


def _cli(capsys, settings, *argv: str) -> tuple[int, str, str]:
    """Runs the CLI in this process (the Spark engine reuses the test session)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INTERESTLAKE__LAKE__ROOT", settings.lake.root)
        code = main([*argv, "--conf", CONF])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- sql ---------------------------------------------------------------------------------


def test_default_engine_answers_without_spark_or_a_jvm(demo):
    settings, sample = demo
    probe = (
        "import json, sys, psutil\n"
        "from interestlake.cli import main\n"
        "code = main(['sql', '--json', '--conf', sys.argv[1], 'SELECT count(*) AS n FROM recommendations'])\n"
        "children = [p.name() for p in psutil.Process().children(recursive=True)]\n"
        "print(json.dumps({'code': code, 'spark_modules': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pyspark', 'py4j')), 'children': children}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, CONF], capture_output=True, text=True, env=_env(settings),
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer, report = (json.loads(line) for line in done.stdout.splitlines())
    assert answer == [{"n": sample.users * settings.recommend.k}]
    assert report == {"code": 0, "spark_modules": [], "children": []}
    assert done.stderr == ""


def test_both_engines_print_the_same_rows_and_tables(demo, capsys):
    settings, _ = demo
    queries = [
        # Vectors as arrays, timestamps, a join and a filter on a column without Delta statistics.
        f"SELECT r.user_id, r.rank, i.title, r.score, r.generated_at FROM recommendations r JOIN items i "
        f"USING (item_id) WHERE r.user_id = '{USER}' ORDER BY r.rank",
        "SELECT user_id, encoder_version, interest, last_event_at FROM user_interests ORDER BY user_id LIMIT 3",
        "SELECT count(*) AS n FROM quarantine",
        # Maps: the same objects (a map's key order is the engine's own in the text table).
        "SELECT stage, status, counts, read_versions FROM pipeline_runs WHERE stage = 'recommend'",
    ]
    for query in queries:
        printed = {}
        for engine in ("duckdb", "spark"):
            json_code, json_out, json_err = _cli(capsys, settings, "sql", "--engine", engine, "--json", query)
            table_code, table_out, _ = _cli(capsys, settings, "sql", "--engine", engine, query)
            assert json_code == table_code == 0, json_err
            printed[engine] = (json.loads(json_out), table_out if "counts" not in query else None)
        assert printed["duckdb"] == printed["spark"], query
    first, *_ = printed["duckdb"][0]
    assert first["counts"]["users_scored"] == USERS and first["read_versions"][C.USER_INTERESTS] >= 1


def test_vectors_come_back_as_arrays_and_the_limit_is_said(demo, capsys):
    settings, sample = demo
    code, out, err = _cli(capsys, settings, "sql", "--json", "--limit", "2", "SELECT user_id, interest FROM user_interests")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2 and "first 2 rows" in err
    assert all(isinstance(row["interest"], list) and len(row["interest"]) == 384 for row in rows)
    assert all(isinstance(value, float) for value in rows[0]["interest"])


ERRORS = {
    "syntax": ("SELEC broken", ["SELEC"]),
    "unknown table": ("SELECT count(*) FROM nosuchtable", ["'nosuchtable'", *C.LAKE_TABLES]),
    "unknown column": ("SELECT nope FROM recommendations", ["nope"]),
    "type": ("SELECT * FROM recommendations WHERE rank = 'first'", ["first"]),
}


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
@pytest.mark.parametrize("kind", list(ERRORS))
def test_each_kind_of_query_error_is_one_line_and_exit_2(demo, capsys, engine, kind):
    settings, _ = demo
    query, named = ERRORS[kind]
    code, out, err = _cli(capsys, settings, "sql", "--engine", engine, "--json", query)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interestlake sql: "), err
    assert all(word in lines[0] for word in named), lines[0]


def test_a_spark_command_prints_no_spark_or_jvm_noise_unless_verbose(demo):
    settings, _ = demo
    command = [sys.executable, "-m", "interestlake.cli", "sql", "--engine", "spark", "--conf", CONF,
               "SELECT count(*) FROM nosuchtable"]
    quiet = subprocess.run(command, capture_output=True, text=True, env=_env(settings), timeout=300)
    assert quiet.returncode == 2 and quiet.stdout == ""
    assert quiet.stderr.splitlines() == [quiet.stderr.strip()] and "unknown table 'nosuchtable'" in quiet.stderr
    verbose = subprocess.run([*command, "-v"], capture_output=True, text=True, env=_env(settings), timeout=300)
    assert verbose.returncode == 2
    # What -v shows is what the default hides: log4j's lines, the JVM's notice, the JSON stack trace.
    noise = re.compile(r"\bWARN\b|log4j|WARNING:|\"level\": \"ERROR\"")
    assert noise.search(verbose.stderr), verbose.stderr[-2000:]
    assert not noise.search(quiet.stderr)


def test_an_empty_lake_has_typed_empty_tables_and_says_which_exist(spark, demo, tmp_path, capsys):
    from interestlake.lake.tables import open_lake

    settings, _ = demo
    empty = make_settings(tmp_path / "empty")
    code, _, err = _cli(capsys, empty, "sql", "SELECT count(*) FROM recommendations")
    assert code == 2 and "unknown table 'recommendations'" in err and "none yet" in err
    open_lake(spark, empty.lake).ensure_tables()
    for table in C.LAKE_TABLES:
        # A table without data files has the columns and types of one with them.
        types = [_cli(capsys, s, "sql", "--json", f"DESCRIBE {table}")[1] for s in (empty, settings)]
        assert json.loads(types[0]) == json.loads(types[1]), table
    assert json.loads(_cli(capsys, empty, "sql", "--json", "SELECT count(*) AS n FROM events")[1]) == [{"n": 0}]


# -- status ------------------------------------------------------------------------------


def test_status_of_a_refreshed_lake(demo, capsys):
    settings, sample = demo
    code, out, _ = _cli(capsys, settings, "status", "--json")
    status = json.loads(out)
    assert code == 0 and status["healthy"] and status["problems"] == []
    tables = {t["table"]: t for t in status["tables"]}
    assert list(tables) == list(C.LAKE_TABLES)
    assert tables[C.RECOMMENDATIONS]["rows"] == sample.users * settings.recommend.k
    assert tables[C.EVENTS]["rows"] == sample.events and tables[C.QUARANTINE]["rows"] == 0
    assert all(t["version"] >= 0 and t["last_commit_at"] for t in tables.values())
    stages = {s["stage"]: s for s in status["stages"]}
    assert set(stages) == {"ingest", "encode", "interests", "recommend"}
    assert all(s["status"] == "succeeded" and s["run_id"] == "demo-1" and s["duration_seconds"] > 0 for s in stages.values())
    assert stages["recommend"]["counts"]["users_scored"] == sample.users
    fresh = status["freshness"]
    newest = json.loads(_cli(capsys, settings, "sql", "--json", "SELECT max(ts) AS t FROM (SELECT ts FROM events UNION ALL "
                                                                   "SELECT ts FROM reviews)")[1])[0]["t"]
    assert fresh["newest_event_landed"] == fresh["newest_event_in_lists"] == newest and fresh["lag_seconds"] == 0
    assert fresh["lists_confirmed_at"] and 0 <= fresh["list_age_seconds"] < 3600
    assert status["models"] == {"encoder_versions": [settings.encoder.version], "registered": {},
                                "interest_model": "none (untrained pooling)"}
    assert status["quarantine"] == [{"run_id": "demo-1", "started_at": stages["ingest"]["started_at"], "reasons": {}}]
    assert status["held_files"] == []
    screen = _cli(capsys, settings, "status")[1]
    assert "healthy" in screen and "UNHEALTHY" not in screen and f"{sample.users * settings.recommend.k} rows" in screen

    # The same lake once the lists are older than status.max_list_age_minutes.
    later = lake_status(settings, now=_parse(fresh["lists_confirmed_at"]) + timedelta(minutes=61))
    assert not later.healthy and "last confirmed current 1:01:00 ago" in later.problems[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INTERESTLAKE__STATUS__MAX_LIST_AGE_MINUTES", "0.0001")
        assert _cli(capsys, settings, "status")[0] == 1


def test_status_after_bad_input_and_a_failed_stage(spark, demo, tmp_path, capsys):
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.refresh import Pipeline

    source, _ = demo
    shutil.copytree(source.lake.root, tmp_path / "lakehouse")
    settings = make_settings(tmp_path / "lakehouse")
    events = tmp_path / "lakehouse" / "landing" / "events"
    (events / "late.jsonl").write_text(
        '{"event_id": "x1", "user_id": "u-0001", "item_id": "i-0001", "event_type": "view", "ts": "2026-11-05T00:00:00Z"}\n'
        "{not json\n"
        '{"event_id": "x2", "user_id": "u-0001", "item_id": "i-0001", "event_type": "teleport", "ts": "2026-11-05T00:00:00Z"}\n',
        encoding="utf-8",
    )
    (events / "empty.jsonl").write_text("", encoding="utf-8")
    pipeline = Pipeline(spark, open_lake(spark, settings.lake), settings)
    run = RunContext.create("demo-2", "2026-11-05T01:00:00Z")
    pipeline.run_stage("ingest", run)

    def encoder_gone() -> StageReport:
        raise RuntimeError("encoder weights unreadable")

    # A stage that fails is recorded as failed by the same code path as a real one.
    with pytest.raises(RuntimeError):
        pipeline.recorded("encode", run, encoder_gone)

    code, out, _ = _cli(capsys, settings, "status", "--json")
    status = json.loads(out)
    assert code == 1 and not status["healthy"]
    stages = {s["stage"]: s for s in status["stages"]}
    assert stages["encode"]["status"] == "failed" and "encoder weights unreadable" in stages["encode"]["note"]
    assert stages["ingest"]["run_id"] == "demo-2" and stages["recommend"]["run_id"] == "demo-1"
    assert any("encode run failed" in p and "encoder weights unreadable" in p for p in status["problems"])
    newest, previous = status["quarantine"][:2]
    assert newest["run_id"] == "demo-2" and previous == {**previous, "run_id": "demo-1", "reasons": {}}
    assert newest["reasons"] == {"empty_file": 1, "invalid_json": 1, "unknown_event_type": 1}
    assert [(h["source"].rsplit("/", 1)[1], h["reason"]) for h in status["held_files"]] == [("empty.jsonl", "empty_file")]
    # The new event landed but the lists were made before it.
    fresh = status["freshness"]
    assert fresh["newest_event_landed"] == "2026-11-05T00:00:00" and fresh["lag_seconds"] > 0
    screen = _cli(capsys, settings, "status")[1]
    assert "UNHEALTHY" in screen and "empty.jsonl: empty_file" in screen and "failed" in screen


def test_status_of_an_empty_lake(tmp_path, capsys):
    settings = make_settings(tmp_path / "nothing")
    code, out, _ = _cli(capsys, settings, "status", "--json")
    status = json.loads(out)
    assert code == 1 and status["tables"] == [] and status["stages"] == []
    assert status["quarantine"] == [] and status["held_files"] == []
    assert status["freshness"]["newest_event_landed"] is None and status["freshness"]["list_age_seconds"] is None
    assert status["problems"] == ["no recommend run has succeeded yet: there are no lists to serve"]
    assert "none yet" in _cli(capsys, settings, "status")[1]


# -- reading snippets (docs/sql.md) ------------------------------------------------------


def readme_snippets() -> dict[str, str]:
    """The ```python blocks of the docs/sql.md section on reading the outputs, by the heading above each."""
    text = READING_PAGE.read_text(encoding="utf-8")
    section = text.split("## Reading the outputs elsewhere", 1)[1].split("\n## ", 1)[0]
    return {heading.strip(): code for heading, code in re.findall(r"\n\*\*(.+?)\*\*[^\n]*\n+```python\n(.*?)```", section, re.S)}


def test_the_readme_reading_snippets_run(spark, demo, monkeypatch, capsys):
    settings, sample = demo
    snippets = readme_snippets()
    runnable = {name: code for name, code in snippets.items() if "delta-spark" not in name}
    assert {"pandas", "DuckDB", "Spark without the Delta jars"} <= set(runnable), list(snippets)
    monkeypatch.chdir(os.path.dirname(settings.lake.root))
    expected = json.loads(_cli(capsys, settings, "sql", "--json",
                               f"SELECT r.rank, i.title FROM recommendations r JOIN items i USING (item_id) "
                               f"WHERE r.user_id = '{USER}' ORDER BY r.rank")[1])
    for name, code in runnable.items():
        scope: dict = {}
        exec(compile(code, f"docs/sql.md: {name}", "exec"), scope)
        top = scope["top"]
        titles = list(top["title"]) if hasattr(top, "columns") else [row["title"] for row in top]
        assert titles == [row["title"] for row in expected], name
        assert len(titles) == settings.recommend.k


def _parse(text: str):
    from datetime import datetime, timezone

    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
