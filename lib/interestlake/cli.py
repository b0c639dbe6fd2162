"""The ``interestlake`` command: every job, the demo and warehouse-style SQL.

Results go to stdout, progress and errors to stderr, so ``sql --json`` output
can be piped. Exit codes: 0 success, 1 the job failed, 2 bad settings or usage,
3 another writer holds the lake.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from interestlake import constants as C
from interestlake.lake.query import ENGINES
from interestlake.settings import CONF_ENV_VAR, DEFAULT_CONF, Settings, SettingsError, load_settings

# torch's OpenMP threads otherwise spin while they wait for a core: next to other work a
# forward pass took 60x longer (docs/evaluation.md, "Threads under load"). Read once, when
# OpenMP starts, so it is set before anything imports torch; the caller's choice wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
log = logging.getLogger("interestlake")
_STAGE_HELP = {
    "ingest": "landing files -> events, reviews, items (+ quarantine)",
    "encode": "texts -> text_embeddings, items -> item_embeddings",
    "interests": "user history -> user_interests",
    "recommend": "user_interests x item_embeddings -> recommendations",
    "refresh": "ingest, encode, interests and recommend in order",
}
_DEMO_USERS = 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command (jobs/*.py share it)."""
    parser = argparse.ArgumentParser(prog="interestlake", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--conf", default=None,
            help=f"settings file (default: ${CONF_ENV_VAR} or {DEFAULT_CONF})",
        )
        sub.add_argument("--master", default=None, help="Spark master, overriding spark.master of the conf")
        chatter = sub.add_mutually_exclusive_group()
        chatter.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
        chatter.add_argument(
            "-v", "--verbose", action="store_true",
            help="also Spark's and the JVM's own log lines (at spark.log_level), hidden by default",
        )
        return sub

    for name, help_text in _STAGE_HELP.items():
        sub = command(name, help_text)
        sub.add_argument("--run-id", default=None, help="run id recorded in the tables (default manual__<time>)")
        sub.add_argument(
            "--logical-date", default=None,
            help="ISO-8601 logical time of the run; a retry with the same value commits nothing twice",
        )
        sub.add_argument("--json", action="store_true", help="print the stage reports as JSON lines")
        _add_writer_wait(sub)
        if name in ("interests", "recommend", "refresh"):
            sub.add_argument("--full", action="store_true", help="recompute every user instead of only the changed ones")

    maintain = command("maintain", "table maintenance: row retention, compaction, vacuum, checkpoints")
    maintain.add_argument("--run-id", default=None, help="name of this run, shown to writers that wait for the lake")
    maintain.add_argument(
        "--logical-date", default=None,
        help="ISO-8601 reference time of the retention cutoffs (default: now); a retry with the same value deletes the same rows",
    )
    maintain.add_argument(
        "--steps", type=_choices(C.MAINTENANCE_STEPS), default=None, metavar="STEP[,STEP]",
        help="steps to run, in this order: retention,compact,vacuum,checkpoint (default: all)",
    )
    maintain.add_argument("--tables", default=None, metavar="TABLE[,TABLE]", help="tables to compact, vacuum and checkpoint (default: all)")
    maintain.add_argument("--json", action="store_true", help="print the step reports as JSON lines")
    _add_writer_wait(maintain)

    stream = command("stream", "run the pipeline continuously: new landing files reach recommendations within seconds")
    _add_writer_wait(stream, " before starting")

    check = command("validate", "check landing files as ingest would, without writing anything")
    check.add_argument("path", help="a landing root (events/, reviews/, items/), one kind's folder, or one file")
    check.add_argument("--examples", type=int, default=3, help="rejected rows shown per reason (default 3)")
    check.add_argument("--json", action="store_true", help="print the counts and examples as one JSON object")

    forget = command("forget", "remove one user from every table, then vacuum (see docs/privacy.md)")
    forget.add_argument("user_id", help="the user's id as the platform knows it (not its pseudonym)")
    forget.add_argument("--run-id", default=None, help="name of this run, shown to writers that wait for the lake")
    forget.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_writer_wait(forget)

    demo = command("demo", "generate the sample data, run refresh, print what it produced")
    demo.add_argument("--users", type=int, default=None, help="sample users (default sample.users)")
    demo.add_argument("--items", type=int, default=None, help="sample items (default sample.items)")

    sample = command("generate-sample", "write the deterministic sample data as landing files")
    sample.add_argument("--users", type=int, default=None, help="sample users (default sample.users)")
    sample.add_argument("--items", type=int, default=None, help="sample items (default sample.items)")
    sample.add_argument("--landing", default=None, help="landing folder (default lake.landing)")

    bench = command("bench", "run a benchmark (minutes; prints JSON with --json)")
    bench.add_argument(
        "name", choices=["refresh", "encode", "score", "freshness"],
        help="refresh: incremental vs full recompute over growing histories; encode: our Spark encode stage vs "
        "the bare encoder (and ONNX int8); score: our scoring vs Spark ALS recommendForAllUsers; freshness: "
        "seconds from a landing file to its recommendations, `stream` vs a `refresh` process per interval",
    )
    bench.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    bench.add_argument("--workdir", default=None,
                       help="where the benchmark files go, kept afterwards (default: a temporary folder, removed at the end)")
    bench.add_argument("--sizes", default="10000,100000,400000", help="refresh: history sizes in events, comma-separated")
    bench.add_argument("--new-events", type=int, default=2000, help="refresh: events in the new batch (default 2000)")
    bench.add_argument("--new-users", type=int, default=200, help="refresh: users in the new batch (default 200)")
    bench.add_argument("--history-events", type=int, default=400_000,
                       help="freshness: events in the lake's history (default 400000)")
    bench.add_argument("--interval", type=float, default=5.0, help="freshness: seconds between landing files (default 5)")
    bench.add_argument("--duration", type=float, default=180.0,
                       help="freshness: seconds of landing files per path (default 180)")
    bench.add_argument("--texts", type=int, default=4000, help="encode: review-length texts (default 4000)")
    bench.add_argument("--no-onnx", action="store_true", help="encode: skip the ONNX int8 line")
    bench.add_argument("--users", type=int, default=20_000, help="score: users (default 20000)")
    bench.add_argument("--items", type=int, default=5_000, help="score: items (default 5000)")
    bench.add_argument("--k", type=int, default=10, help="score: K (default 10)")
    bench.add_argument(
        "--paths", default="learned,cosine,plain",
        help="score: settings of the one scoring path to time, comma-separated: learned (a learned interest model, "
        "steering on: production with a champion), cosine (no model, steering on), plain (no model, steer.enabled: false)",
    )
    bench.add_argument("--history", type=int, default=None,
                       help="score: recent history entries per user (default interests.short_term_events)")

    imp = command("import-dataset", "write a public dataset (MovieLens, Amazon reviews) as landing files")
    imp.add_argument("--dataset", required=True, choices=["movielens", "amazon-reviews"], help="dataset layout")
    imp.add_argument("--path", required=True, help="the dataset's folder (MovieLens) or reviews file or folder (Amazon)")
    imp.add_argument("--landing", default=None, help="landing folder (default lake.landing)")
    imp.add_argument("--ingest", action="store_true", help="run the ingest stage on the lake right after")

    ev = command("evaluate", "offline evaluation of our pipeline and the baselines, tracked in MLflow")
    ev.add_argument("--dataset", required=True, choices=["movielens", "amazon-reviews"], help="dataset layout")
    ev.add_argument("--path", required=True, help="the dataset's folder or file")
    ev.add_argument("--protocol", required=True, choices=["leave-last-out", "temporal", "stratified"])
    ev.add_argument("--seed", type=int, default=None, help="split and model seed (default evaluation.seed)")
    ev.add_argument("-k", "--k", type=int, default=None, help="K of the reported metrics (default evaluation.k)")
    ev.add_argument("--max-k", type=int, default=None, help="longest list, for the metric curves (default evaluation.max_k)")
    ev.add_argument("--ratio", type=float, default=None, help="stratified: training share per item (default 0.75)")
    ev.add_argument("--cut", default=None, help="temporal: ISO time of the cut (default: a quantile of the times)")
    ev.add_argument("--quantile", type=float, default=None, help="temporal: the cut as a quantile of times (default 0.8)")
    ev.add_argument("--ties", choices=["input", "random"], default=None,
                    help="leave-last-out: equal times keep the input order (default) or draw with the seed")
    ev.add_argument("--methods", default=None,
                    help="comma-separated methods (default: interestlake,interestlake_no_text,interestlake_zero_shot,popularity,item_knn,als "
                    "and the peers sasrec,implicit_als,implicit_bpr,ease,bivae, which need pip install -e '.[peers]'); "
                    "also bert4rec, and interestlake_negative, interestlake_multi_interest, interestlake_mmr (the learned "
                    "model with one more part of steering on)")
    ev.add_argument("--json", action="store_true", help="print only the JSON result on stdout")

    enc = command("encoder", "the encoder in the MLflow model registry")
    enc.add_argument("action", choices=["register", "resolve"],
                     help="register: log the configured encoder as a new version and make it @champion; "
                          "resolve: print the version @champion (or encoder.model_path) names now")
    enc.add_argument("--no-alias", action="store_true", help="register without moving @champion")

    train = command("train", "train the interest model on the lake's tables and register it in MLflow")
    train.add_argument("--run-id", default=None, help="name of this training run")
    train.add_argument("--logical-date", default=None, help="accepted for orchestrators; the model is trained on the tables as they are now")
    train.add_argument("--promote", action="store_true", help="then promote it if it beats the champion")
    train.add_argument("--json", action="store_true", help="print the result as one JSON object")
    train.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="accepted for orchestrators (training reads a snapshot and takes no lock)")

    promote = command("promote", "make an interest model version @champion if it beats the champion's validation NDCG")
    promote.add_argument("--version", type=int, default=None, help="registered version (default: the newest)")
    promote.add_argument("--run-id", default=None, help="accepted for orchestrators")
    promote.add_argument("--logical-date", default=None, help="accepted for orchestrators")
    promote.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    promote.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="accepted for orchestrators")

    upgrade = command("upgrade", "bring a lake written by an earlier version to this version's table layout, in place")
    upgrade.add_argument("--dry-run", action="store_true", help="list the changes; write nothing")
    upgrade.add_argument("--run-id", default=None, help="run id recorded in pipeline_runs (default manual__<time>)")
    upgrade.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_writer_wait(upgrade)

    sql = command("sql", "run SQL over the lake tables' current snapshot, registered by name")
    sql.add_argument("query", help='e.g. "SELECT * FROM recommendations WHERE user_id = \'u-0001\'"')
    sql.add_argument("--json", action="store_true", help="print the rows as one JSON array of objects, nothing else")
    sql.add_argument("--limit", type=int, default=1000, help="at most this many rows (default 1000)")
    sql.add_argument(
        "--engine", choices=ENGINES, default=ENGINES[0],
        help="duckdb: in this process, no JVM (default); spark: Spark SQL, for lakes too big for one process",
    )

    status = command("status", "one screen for operators: tables, last stage runs, freshness, models, "
                               "quarantine, held files; exit 1 when unhealthy")
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    status.add_argument("--runs", type=int, default=5, help="ingest runs whose quarantine counts are shown (default 5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command and returns its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # py4j logs every callback of the streaming ingest at INFO, and an error raised in one
    # (a full disk under ingest) at ERROR with both stack traces, before the same error
    # reaches the command, which names it in one line: both only with -v.
    logging.getLogger("py4j").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    settings = None
    try:
        # validate reads only the files it is given: no conf file is needed.
        settings = load_settings(args.conf) if args.command != "validate" else None
        if settings is not None and not args.verbose:
            # Spark's and the JVM's own lines (start-up warnings, a failed query's stack
            # trace) mean nothing to a user: hidden unless -v; ours stay.
            settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"log_level": "OFF"})})
        return _COMMANDS[args.command](args, settings)
    except SettingsError as exc:
        print(f"interestlake: {exc}", file=sys.stderr)
        return 2
    except (ValueError, KeyError) as exc:
        print(f"interestlake {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from interestlake.lake.lock import LakeBusyError
        from interestlake.lake.query import LakeReadError
        from interestlake.lake.tables import LakeError, storage_failure
        from interestlake.models.encoder import EncoderError
        from interestlake.evaluation.leakage import LeakageError
        from interestlake.models.registry import RegistryError

        if isinstance(exc, LakeBusyError):
            print(f"interestlake {args.command}: {exc}", file=sys.stderr)
            return 3
        if isinstance(exc, (LakeError, LakeReadError, EncoderError, RegistryError, LeakageError)):
            print(f"interestlake {args.command}: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, OSError) or storage_failure(exc):
            # The lake's storage cannot be reached or written (missing mount, permissions, network,
            # a full disk or a read-only file system, also when a Spark task or delta-rs met it).
            where = f" at {settings.lake.root}" if settings is not None else ""
            cause = f"{type(exc).__name__}: {_one_line(str(exc))}" if isinstance(exc, OSError) else storage_failure(exc)
            print(f"interestlake {args.command}: the lake{where} cannot be used: {cause}", file=sys.stderr)
            return 1
        raise


def _one_line(text: str) -> str:
    """A message on one line: delta-rs' errors chain their causes on lines of their own, in colour."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def _run_stages(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.pipeline.refresh import STAGES, open_pipeline
    from interestlake.pipeline.run import RunContext

    run = RunContext.create(args.run_id, args.logical_date)
    names = list(STAGES) if args.command == "refresh" else [args.command]
    full = getattr(args, "full", False)
    with open_pipeline(settings, args.master, writer=run.run_id, wait_seconds=args.wait, jobs=names) as pipeline:
        reports = [pipeline.run_stage(name, run, full) for name in names]
    for report in reports:
        print(report.to_json() if args.json else report.summary())
    return 0


def _maintain(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.pipeline.maintain import maintain
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.run import RunContext

    run = RunContext.create(args.run_id, args.logical_date)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    with open_pipeline(settings, args.master, writer=run.run_id, wait_seconds=args.wait, jobs=["maintain"]) as pipeline:
        reports = maintain(pipeline.lake, settings, run.timestamp, steps=args.steps or C.MAINTENANCE_STEPS, tables=tables)
    for report in reports:
        print(report.to_json() if args.json else report.summary())
    return 0


def _stream(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.pipeline.stream import run_stream

    if not (args.verbose or args.quiet):
        # One line per micro-batch: the stages' own progress lines (and Spark's) only with -v.
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: record.levelno >= logging.WARNING or record.name == "interestlake.stream")
    def reload() -> Settings:
        # As main() loaded them: the Spark log level it set is no change of the conf file.
        fresh = load_settings(args.conf)
        return fresh.model_copy(update={"spark": fresh.spark.model_copy(update={"log_level": settings.spark.log_level})})

    run_stream(settings, args.master, args.wait, reload=reload)
    return 0


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.datasets.checks import check_landing

    check = check_landing(args.path, examples_per_reason=args.examples)
    print(json.dumps(check.to_json(), ensure_ascii=False) if args.json else check.summary())
    return 0


def _forget(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.pipeline.forget import forget
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.run import RunContext

    run = RunContext.create(args.run_id)
    with open_pipeline(settings, args.master, writer=run.run_id, wait_seconds=args.wait) as pipeline:
        # Recorded in pipeline_runs like every write (counts only: nothing names the user).
        report = pipeline.recorded("forget", run, lambda: forget(pipeline.spark, pipeline.lake, settings, args.user_id, run))
    print(report.to_json() if args.json else report.summary())
    return 0


def _upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.run import RunContext
    from interestlake.pipeline.upgrade import upgrade

    run = RunContext.create(args.run_id)
    writer = None if args.dry_run else run.run_id
    with open_pipeline(settings, args.master, writer=writer, wait_seconds=args.wait, ensure_tables=False) as pipeline:
        report = upgrade(pipeline, run, dry_run=args.dry_run)
    print(report.to_json() if args.json else report.summary())
    return 0



def _add_writer_wait(parser: argparse.ArgumentParser, when: str = "") -> None:
    """``--wait SECONDS`` of every command that takes the lake's writer lock."""
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS",
        help=f"wait this long for another writer to finish{when} (default: exit at once with code 3)",
    )

def _choices(allowed: Sequence[str]):
    """argparse type of a comma-separated subset of ``allowed``."""

    def parse(value: str) -> tuple[str, ...]:
        chosen = tuple(v.strip() for v in value.split(",") if v.strip())
        if not chosen or set(chosen) - set(allowed):
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(allowed)}, got {value!r}")
        return chosen

    return parse


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.pipeline.refresh import STAGES, open_pipeline
    from interestlake.pipeline.run import RunContext

    _generate_sample(args, settings)
    run = RunContext.create()
    with open_pipeline(settings, args.master, writer=run.run_id, jobs=list(STAGES)) as pipeline:
        for report in pipeline.refresh(run):
            print(report.summary())
        print(f"\nLake: {settings.lake.root}")
        lake = pipeline.lake
        for name in lake.register_views():
            print(f"  {name:<16} {lake.read(name).count():>7} rows")
        recs = lake.read(C.RECOMMENDATIONS)
        users = [r[0] for r in recs.select(C.COL_USER_ID).distinct().orderBy(C.COL_USER_ID).limit(_DEMO_USERS).collect()]
        for user in users:
            print(f"\nTop {settings.recommend.k} for {user}:")
            rows = (
                recs.filter(recs[C.COL_USER_ID] == user)
                .join(lake.read(C.ITEMS).select(C.COL_ITEM_ID, C.COL_TITLE, C.COL_CATEGORY), C.COL_ITEM_ID)
                .orderBy(C.COL_RANK)
                .collect()
            )
            for row in rows:
                print(f"  {row[C.COL_RANK]:>2}. {row[C.COL_TITLE]} [{row[C.COL_CATEGORY]}] "
                      f"score {row[C.COL_SCORE]:.3f}\n      {row[C.COL_REASON]}")
    print('\nQuery the tables: interestlake sql "SELECT * FROM recommendations LIMIT 10"')
    return 0


def _generate_sample(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.datasets.sample import generate_sample

    sample = generate_sample(
        getattr(args, "landing", None) or settings.lake.landing_uri,
        seed=settings.sample.seed,
        n_users=args.users or settings.sample.users,
        n_items=args.items or settings.sample.items,
        days=settings.sample.days,
    )
    print(f"wrote {len(sample.files)} files to {sample.landing_dir}: {sample.users} users, {sample.items} items, "
          f"{sample.events} events, {sample.reviews} reviews")
    return 0


def _sql(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.lake.query import run_query, spark_query

    if args.engine == "spark":
        from interestlake.pipeline.refresh import open_pipeline

        with open_pipeline(settings, args.master) as pipeline:
            result = spark_query(pipeline.lake, args.query, args.limit)
    else:
        result = run_query(settings.lake, args.query, args.limit)
    if result.truncated:
        print(f"interestlake sql: showing the first {args.limit} rows (--limit)", file=sys.stderr)
    if args.json:
        print(json.dumps([{c: _json_value(row[c]) for c in result.columns} for row in result.rows], ensure_ascii=False))
    else:
        print(format_table(result.columns, result.rows))
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.lake.status import lake_status

    status = lake_status(settings, quarantine_runs=args.runs)
    print(json.dumps(_json_value(status.to_json()), ensure_ascii=False) if args.json else status.screen())
    return 0 if status.healthy else 1


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile
    from contextlib import nullcontext

    from interestlake import benchmarks

    sizes: list[int] = []
    if args.name == "refresh":
        try:
            sizes = [int(size) for size in args.sizes.split(",")]
        except ValueError:
            raise ValueError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
    # A folder of the user's is kept; the temporary one (a default score run writes about
    # 200 MB of tables and Parquet) goes when the run ends, so repeated runs do not fill the disk.
    folder = nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory(prefix=f"interestlake-bench-{args.name}-")
    with folder as workdir:
        if args.name == "refresh":
            result = benchmarks.refresh_benchmark(sizes, args.new_events, args.new_users, conf=args.conf, workdir=workdir)
        elif args.name == "freshness":
            result = benchmarks.freshness_benchmark(args.history_events, args.new_events, args.new_users, args.interval,
                                                    args.duration, conf=args.conf, workdir=workdir)
        elif args.name == "encode":
            result = benchmarks.encode_benchmark(args.texts, conf=args.conf, onnx=not args.no_onnx, workdir=workdir)
        else:
            paths = tuple(path.strip() for path in args.paths.split(",") if path.strip())
            result = benchmarks.score_benchmark(args.users, args.items, args.k, conf=args.conf, workdir=workdir,
                                                history=args.history, paths=paths)
    if not args.workdir:
        result["workdir"] = None  # removed with the run
    if args.json:
        print(json.dumps(result))
    elif args.name == "refresh":
        for row in result["results"]:
            print(f"history {row['history_events']:>8} events: incremental {row['incremental_seconds']:>6.1f}s, "
                  f"full {row['full_seconds']:>6.1f}s, max diff {row['interests_max_abs_diff']}, "
                  f"same top-K {row['recommendations_equal']}")
    else:
        print(json.dumps(result, indent=2))
    return 0


def _import_dataset(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.datasets.public import write_landing

    landing = args.landing or settings.lake.landing_uri
    written = write_landing(args.dataset, args.path, landing)
    rows = ", ".join(f"{n} {kind}" for kind, n in written["rows"].items())
    print(f"wrote {len(written['files'])} landing file(s) under {landing}: {rows} (lines, bad ones included)")
    if not args.ingest:
        print("ingest them with: interestlake ingest")
        return 0
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.run import RunContext

    run = RunContext.create()
    with open_pipeline(settings, args.master, writer=run.run_id) as pipeline:
        print(pipeline.run_stage("ingest", run).summary())
    return 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    import pandas as pd

    from interestlake.evaluation.runner import DEFAULT_METHODS, evaluate
    from interestlake.evaluation.tracking import log_evaluation
    from interestlake.models import registry
    from interestlake.spark_session import spark_session

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else DEFAULT_METHODS
    # The encoder evaluated is a registered version: encoder.model_path when it names
    # one, else @champion (the configured encoder is registered first if there is none).
    if registry.is_registry_uri(settings.encoder.model_path):
        encoder = registry.resolve(settings, settings.encoder.model_path)
    else:
        encoder = registry.champion(settings)
    with spark_session(settings, args.master) as spark:
        result = evaluate(
            spark, settings, args.dataset, args.path, args.protocol, seed=args.seed, k=args.k, max_k=args.max_k,
            split_params={"ratio": args.ratio, "cut": args.cut, "quantile": args.quantile, "ties": args.ties},
            methods=methods, encoder=encoder,
        )
    log_evaluation(result, settings)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    table = result.table()
    columns = ["method", *table.columns]
    # "-": a metric the method has no value for (cold_* of a peer that cannot fold a history in).
    rows = [{"method": name, **{c: "-" if pd.isna(v) else f"{v:.4f}" for c, v in row.items()}}
            for name, row in table.iterrows()]
    print(f"{result.dataset}, {result.protocol}, K={result.k}, {result.counts['test_users']} test users, "
          f"encoder {result.params['encoder_model_uri']}, {result.seconds['total']:.0f}s"
          + (f" (training the interest model {result.seconds['train']:.0f}s)" if "train" in result.seconds else ""))
    print(format_table(columns, rows))
    print(f"MLflow run {result.mlflow_run_id} at {registry.tracking_uri(settings)}")
    return 0


def _encoder(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.models import registry

    if args.action == "register":
        resolved = registry.register_encoder(settings, None if args.no_alias else registry.CHAMPION)
    elif registry.is_registry_uri(settings.encoder.model_path):
        resolved = registry.resolve(settings, settings.encoder.model_path)
    else:
        resolved = registry.champion(settings, register_if_missing=False)
    print(json.dumps({"model_uri": resolved.uri, "version": resolved.version, "encoder_version": resolved.encoder_version}))
    return 0


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.models import interest_registry
    from interestlake.models.training import NotEnoughData
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.train import train_model

    # The model trained is independent of the one in use: read the tables as they are.
    settings = settings.model_copy(update={"model": settings.model.model_copy(update={"uri": "none"})})
    with open_pipeline(settings, args.master) as pipeline:
        try:
            result, versions = train_model(pipeline.lake, pipeline.settings)
        except NotEnoughData as exc:
            print(json.dumps({"trained": False, "reason": str(exc)}) if args.json else f"nothing trained: {exc}")
            return 0
    version = interest_registry.log_model(settings, result, versions)
    out = {"trained": True, "name": settings.model.name, "version": version, "metrics": result.metrics,
           "data_versions": versions}
    if args.promote:
        out["promotion"] = interest_registry.promote(settings, version).to_json()
    print(json.dumps(out) if args.json else "\n".join(f"{key}: {value}" for key, value in out.items()))
    return 0


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    from interestlake.models import interest_registry

    decision = interest_registry.promote(settings, args.version)
    print(json.dumps(decision.to_json()) if args.json else
          f"{decision.name} version {decision.version}: {'promoted' if decision.promoted else 'not promoted'} ({decision.reason})")
    return 0


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def format_table(columns: Sequence[str], rows: Sequence[dict]) -> str:
    """A plain text table; long cells (vectors, texts) are shortened."""

    def cell(value: Any) -> str:
        text = "NULL" if value is None else json.dumps(_json_value(value), ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
        return text if len(text) <= 60 else text[:57] + "..."

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


_COMMANDS = {
    **{name: _run_stages for name in _STAGE_HELP},
    "maintain": _maintain,
    "stream": _stream,
    "validate": _validate,
    "forget": _forget,
    "upgrade": _upgrade,
    "demo": _demo,
    "generate-sample": _generate_sample,
    "sql": _sql,
    "status": _status,
    "bench": _bench,
    "import-dataset": _import_dataset,
    "train": _train,
    "promote": _promote,
    "evaluate": _evaluate,
    "encoder": _encoder,
}


if __name__ == "__main__":
    sys.exit(main())
