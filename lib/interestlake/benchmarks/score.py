"""``bench score``: our scoring stage vs Spark MLlib ALS ``recommendForAllUsers`` on the same users and items."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from interestlake import constants as C

log = logging.getLogger("interestlake")
_ALS_RANK = 64
_INTERACTIONS_PER_USER = 20
# Each side (our paths, ALS) is timed this many times in a row and its fastest run reported:
# the first run of a plan pays the JVM's compilation of its code, which both sides do once,
# so two runs left one warm run per side, and single warm runs of one side differed by up to
# 20% on the quiet 2-core machine (ALS: 5.44 and 4.55 s; docs/performance.md).
_REPEATS = 3


def unit_vector(seed: int, index: int, dim: int) -> np.ndarray:
    """The benchmark's vector number ``index``: reproducible anywhere from (seed, index)."""
    vector = np.random.default_rng([seed, index]).standard_normal(dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def catalog(users: int, items: int, dim: int, seed: int) -> tuple[list[str], np.ndarray]:
    """The benchmark's item ids and unit vectors (numbered after the users' vectors)."""
    item_ids = [f"item-{n:07d}" for n in range(items)]
    return item_ids, np.stack([unit_vector(seed, users + n, dim) for n in range(items)])


# The recommend stage's one scoring path in three settings: with a learned interest model
# (what production runs once a champion is promoted), without one (cosine relevance), and
# plain (steer.enabled: false, no model): needs, dislikes and reasons apply to the first two.
PATHS = ("learned", "cosine", "plain")
_TOPICS = ["guitar strings", "jazz", "camping"]
_NEED = "guitar strings under $20"
# Every this many users has a fresh search (a need) in the steered paths.
NEED_EVERY = 10


def score_benchmark(
    users: int = 20_000, items: int = 5_000, k: int = 10, dim: int = 384, conf: str | None = None,
    check_users: int = 200, workdir: str | None = None, seed: int = 11, ann: bool = True, history: int | None = None,
    paths: tuple[str, ...] = PATHS,
) -> dict[str, Any]:
    """Seconds to top-K every user: the recommend stage's scoring path vs ALS ``recommendForAllUsers`` (rank 64).

    Users and items are random unit vectors, written to Parquet before the timing,
    with what the recommend stage gives its scorer: each user's recent history
    (``history`` entries, default ``interests.short_term_events``; every fourth a
    purchase, so excluded), topics, and a fresh search (a need with a price bound)
    for every tenth user; each item a price and a text. Each path in ``paths`` is the
    stage's one scoring path (``pipeline.scorer.score_users``), timed after a warm-up
    call on every slot, three times in a row (the fastest run reported, as for ALS), then once
    more with peak memory sampled (untimed: the sampler costs CPU):

    - ``learned``: with a learned interest model (random weights of the configured
      shapes: ``[u, 1] . [v_j, b_j]`` plus the item-kNN term) and steering on;
    - ``cosine``: without a model (cosine relevance), steering on;
    - ``plain``: without a model, ``steer.enabled: false``.

    ALS is fitted on random implicit interactions of the same users and items
    first, and only its recommend call is timed. All write their full result to
    Parquet (ALS is also timed to Spark's noop sink, ``als_noop_seconds``, which writes
    nothing, and each path's ``ratio_to_als_noop`` given); each path's lists are checked
    against a brute-force numpy top K on ``check_users`` users (for the steered paths,
    users without a need, whose list is by design the top K of the relevance). With
    ``ann`` (and faiss installed), the approximate FAISS retrieval is timed too and
    its recall@K against the exact plain lists reported.

    Returns:
        ``{"benchmark": "score", "users", "items", "k", "path", "ours_seconds",
        "als_seconds", "ratio", "exact_top_k_equal", peak memory, "paths", ...}``:
        the top-level figures are the first path of ``paths`` (``learned`` by default);
        ``paths`` has every timed path.
    """
    import pyarrow as pa
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from interestlake.benchmarks.memory import peak_memory
    from interestlake.pipeline.recommend import scoring_tasks
    from interestlake.settings import load_settings
    from interestlake.spark_session import spark_session

    unknown = set(paths) - set(PATHS)
    if unknown or not paths:
        raise ValueError(f"bench score: unknown path(s) {sorted(unknown)}; choose from {', '.join(PATHS)}")
    base = Path(workdir or tempfile.mkdtemp(prefix="interestlake-bench-score-"))
    env = {"INTERESTLAKE__LAKE__ROOT": str(base / "lake"), "INTERESTLAKE__SPARK__LOG_LEVEL": "ERROR"}
    settings = load_settings(conf, env={**os.environ, **env})
    settings = settings.model_copy(update={"recommend": settings.recommend.model_copy(update={"k": k})})
    history = settings.interests.short_term_events if history is None else history
    default_path = paths[0]

    item_ids, item_matrix = catalog(users, items, dim, seed)
    model = random_model(item_ids, item_matrix, settings, seed) if "learned" in paths else None
    uris = write_items(base, item_ids, item_matrix, model, seed)
    side_schema = user_schema(model)

    def user_rows(batches):
        for batch in batches:
            yield pa.RecordBatch.from_pylist(
                [user_row(int(n), seed, dim, history, item_ids, item_matrix, model) for n in batch.column("id").to_pylist()],
                schema=side_schema,
            )

    results: dict[str, dict[str, Any]] = {}
    with spark_session(settings) as spark:
        slots = spark.sparkContext.defaultParallelism
        tasks = scoring_tasks(users, slots)
        # The users' vectors and evidence exist before the timing, as ALS's factors do.
        users_uri = str(base / "users")
        (
            spark.range(users, numPartitions=tasks)
            .mapInArrow(user_rows, from_arrow_schema(side_schema))
            .write.mode("overwrite").parquet(users_uri)
        )
        user_side = spark.read.parquet(users_uri)
        shared = spark.sparkContext.broadcast(model) if model is not None else None
        for path in paths:
            scorer = _scorer(path, uris, settings, shared)
            # Warm-up, as ALS is warm from its fit: start every slot's Python worker (one task per
            # slot, run at once), import the scoring code and read the item matrix there.
            scorer(user_side.limit(slots * 64).repartition(slots)).write.format("noop").mode("overwrite").save()
            out = str(base / f"ours-{path}")
            timings = []
            for _ in range(_REPEATS):
                started = time.perf_counter()
                scorer(user_side.repartition(tasks, C.COL_USER_ID)).write.mode("overwrite").parquet(out)
                timings.append(time.perf_counter() - started)
            # Memory in one more, untimed run: the sampler lists and reads every process ten
            # times a second, CPU the 2 cores' timed runs (and ALS's, sampled never) would lose.
            with peak_memory() as peaks:
                scorer(user_side.repartition(tasks, C.COL_USER_ID)).write.mode("overwrite").parquet(out)
            seconds = min(timings)
            log.info("bench score: %s %.1fs (runs: %s)", path, seconds, ", ".join(f"{t:.1f}" for t in timings))
            results[path] = {"seconds": round(seconds, 2), "runs_seconds": [round(t, 2) for t in timings], **peaks.as_dict(),
                             "out": out}
        approximate = None
        if ann and "plain" in paths:
            approximate = _approximate(spark, user_side, uris["items"], settings, results["plain"]["out"], base)

        interactions = (
            spark.range(users * _INTERACTIONS_PER_USER)
            .select(
                (F.col("id") / _INTERACTIONS_PER_USER).cast("int").alias("user"),
                F.pmod(F.xxhash64("id", F.lit(seed)), F.lit(items)).cast("int").alias("item"),
                F.lit(1.0).alias("rating"),
            )
            .dropDuplicates(["user", "item"])
        )
        als = ALS(rank=_ALS_RANK, maxIter=5, implicitPrefs=True, userCol="user", itemCol="item", ratingCol="rating",
                  seed=seed, coldStartStrategy="drop").fit(interactions)
        als.userFactors.count(), als.itemFactors.count()
        # ALS writes its lists to Parquet as ours do (a recommender's output is a stored table);
        # its time to Spark's noop sink, which writes nothing, is reported beside it.
        als_timings, als_noop_timings = [], []
        for _ in range(_REPEATS):
            started = time.perf_counter()
            als.recommendForAllUsers(k).write.mode("overwrite").parquet(str(base / "als"))
            als_timings.append(time.perf_counter() - started)
        for _ in range(_REPEATS):
            started = time.perf_counter()
            als.recommendForAllUsers(k).write.format("noop").mode("overwrite").save()
            als_noop_timings.append(time.perf_counter() - started)
        als_seconds, als_noop_seconds = min(als_timings), min(als_noop_timings)
        log.info("bench score: ALS %.1fs (runs: %s), to the noop sink %.1fs (runs: %s)", als_seconds,
                 ", ".join(f"{t:.1f}" for t in als_timings), als_noop_seconds, ", ".join(f"{t:.1f}" for t in als_noop_timings))

        rng = np.random.default_rng(seed)
        checked = rng.choice(users, size=min(check_users, users), replace=False)
        for path, result in results.items():
            sample = [n for n in checked if path == "plain" or n % NEED_EVERY]
            exact = expected_lists(sample, path, seed, dim, history, item_ids, item_matrix, model, k)
            got: dict[str, list[tuple[int, str]]] = {}
            for row in spark.read.parquet(result.pop("out")).filter(F.col(C.COL_USER_ID).isin(list(exact))).collect():
                got.setdefault(row[C.COL_USER_ID], []).append((row[C.COL_RANK], row[C.COL_ITEM_ID]))
            result.update(
                ratio=round(result["seconds"] / als_seconds, 3),
                ratio_to_als_noop=round(result["seconds"] / als_noop_seconds, 3),
                exact_top_k_equal=all([item for _, item in sorted(got.get(user, []))] == want for user, want in exact.items()),
                checked_users=len(exact),
            )
    top = results.get(default_path) or next(iter(results.values()))
    return {
        "benchmark": "score",
        "users": users,
        "items": items,
        "k": k,
        "dim": dim,
        "history_entries": history,
        "path": default_path if default_path in results else next(iter(results)),
        "ours_seconds": top["seconds"],
        "als_seconds": round(als_seconds, 2),
        "als_runs_seconds": [round(t, 2) for t in als_timings],
        "als_noop_seconds": round(als_noop_seconds, 2),
        "als_noop_runs_seconds": [round(t, 2) for t in als_noop_timings],
        "timed_runs": _REPEATS,
        "ratio": top["ratio"],
        "exact_top_k_equal": top["exact_top_k_equal"],
        "checked_users": top["checked_users"],
        "user_block_size": settings.recommend.user_block_size,
        "item_block_size": settings.recommend.item_block_size,
        **{key: top[key] for key in ("driver_python_peak_mb", "driver_jvm_peak_mb", "python_worker_peak_mb")},
        "paths": results,
        "approximate": approximate,
        "workdir": str(base),
    }


def _scorer(path: str, uris: dict[str, str], settings, model):
    """The DataFrame -> ranked rows function of one path, as the recommend stage calls it."""
    from pyspark.sql import functions as F

    from interestlake.pipeline.scorer import score_users

    if path == "learned":
        # The stage stores the model's user vector as the user's interest.
        return lambda users: score_users(
            users.withColumn("interest", F.col("learned_interest")).drop("learned_interest"), uris["learned_items"],
            settings, model=model,
        )
    # Without a model the stage's user side has no model vector: the column written for the
    # learned path is dropped, as its conversion would be timed otherwise.
    without_model = (lambda users: users.drop("learned_interest")) if model is not None else (lambda users: users)
    if path == "cosine":
        return lambda users: score_users(without_model(users), uris["items"], settings)
    plain = settings.model_copy(update={"steer": settings.steer.model_copy(update={"enabled": False})})
    return lambda users: score_users(without_model(users), uris["items"], plain)


def random_model(item_ids: list[str], item_matrix: np.ndarray, settings, seed: int):
    """An interest model of the configured shapes with random weights: scoring costs the same as a trained one."""
    from interestlake.models.interest_model import AGE_BUCKETS, KINDS, InterestModel

    rng = np.random.default_rng([seed, 1])
    n, d, h, m = len(item_ids), item_matrix.shape[1], settings.model.dim, settings.model.neighbors
    context = settings.interests.short_term_events
    neighbors = np.stack([rng.choice(n, size=min(m, n), replace=False) for _ in range(n)]) if n else np.zeros((0, m), int)
    arrays = {
        "w_hist": rng.standard_normal((d, h)).astype(np.float32) / np.sqrt(d),
        "w_item": rng.standard_normal((d, h)).astype(np.float32) / np.sqrt(d),
        "attention": rng.standard_normal((h, h)).astype(np.float32) / np.sqrt(h),
        "kind_emb": rng.standard_normal((len(KINDS), h)).astype(np.float32) * 0.1,
        "kind_bias": np.zeros(len(KINDS), np.float32), "pos_bias": np.zeros(context, np.float32),
        "age_bias": np.zeros(AGE_BUCKETS, np.float32),
        "item_in": rng.standard_normal((n, h)).astype(np.float32) * 0.1,
        "item_out": rng.standard_normal((n, h)).astype(np.float32) * 0.1,
        "item_bias": rng.standard_normal(n).astype(np.float32) * 0.1,
        "item_pop": np.log1p(rng.integers(0, 100, n)).astype(np.float32),
        "neighbor_idx": neighbors.astype(np.int64),
        "neighbor_sim": rng.uniform(0, 1, neighbors.shape).astype(np.float32),
    }
    meta = {"context": context, "knn_weight": 1.0, "knn_decay": 0.7, "pop_weight": 0.1, "cold_bias": 0.0}
    return InterestModel(np.array(item_ids, dtype=object), arrays, meta)


def write_items(base: Path, item_ids: list[str], item_matrix: np.ndarray, model, seed: int) -> dict[str, str]:
    """The item matrix as the stage stages it (``scorer.ITEM_MATRIX_SCHEMA``), and with a model's score vectors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interestlake.pipeline.scorer import ITEM_MATRIX_ARROW_SCHEMA, SCORE_VECTOR

    rng = np.random.default_rng([seed, 2])
    words = ["guitar strings", "jazz record", "camping tent", "drum sticks"]
    columns = {
        C.COL_ITEM_ID: item_ids, C.COL_EMBEDDING: list(item_matrix), C.COL_PRICE: rng.uniform(5, 500, len(item_ids)),
        C.COL_TEXT: [f"item {n} {words[n % len(words)]}" for n in range(len(item_ids))],
        SCORE_VECTOR: [None] * len(item_ids),
    }
    tables = {"items": columns}
    if model is not None:
        tables["learned_items"] = {**columns, SCORE_VECTOR: list(model.item_vectors(item_ids, item_matrix))}
    uris = {}
    for name, table in tables.items():
        uris[name] = str(base / name)
        Path(uris[name]).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(table, schema=ITEM_MATRIX_ARROW_SCHEMA), f"{uris[name]}/{name}.parquet")
    return uris


def user_schema(model):
    """Arrow schema of the benchmark's user side: what the recommend stage hands its scorers."""
    import pyarrow as pa

    vector, strings = pa.list_(pa.float32()), pa.list_(pa.string())
    fields = [
        (C.COL_USER_ID, pa.string()), ("interest", vector), ("excluded", strings), ("hist_kind", strings),
        ("hist_item", strings), ("hist_label", strings), ("hist_ts", pa.list_(pa.timestamp("us"))),
        ("hist_vec", pa.list_(vector)), ("hist_shipped", pa.list_(pa.int32())), ("ref_ts", pa.timestamp("us")),
        ("need_text", strings), ("need_ts", pa.list_(pa.timestamp("us"))), ("need_vec", pa.list_(vector)),
        ("disliked_items", strings), ("disliked_vec", pa.list_(vector)), ("rated_items", strings),
        ("rated_values", pa.list_(pa.float64())), ("topics", strings),
    ]
    if model is not None:
        fields.append(("learned_interest", vector))
    return pa.schema(fields)


def _history(n: int, seed: int, history: int, items: int) -> list[int]:
    """Item numbers of user ``n``'s recent history, newest first."""
    return np.random.default_rng([seed, n, 3]).choice(items, size=min(history, items), replace=False).tolist()


def user_row(n: int, seed: int, dim: int, history: int, item_ids, item_matrix, model) -> dict[str, Any]:
    """User ``n`` of the benchmark, reproducible from (seed, n): vectors, recent history and evidence."""
    import datetime

    recent = _history(n, seed, history, len(item_ids))
    kinds = [C.EVENT_PURCHASE if i % 4 == 0 else C.EVENT_VIEW for i in range(len(recent))]
    now = datetime.datetime(2026, 11, 1)
    need = n % NEED_EVERY == 0
    row = {
        C.COL_USER_ID: f"user-{n:07d}", "interest": unit_vector(seed, n, dim),
        "excluded": [item_ids[i] for i, kind in zip(recent, kinds) if kind == C.EVENT_PURCHASE],
        "hist_kind": kinds, "hist_item": [item_ids[i] for i in recent],
        "hist_label": [f"item {i}" for i in recent],
        "hist_ts": [now - datetime.timedelta(hours=i) for i in range(len(recent))],
        # Listed items' entries travel without a vector, as the stage ships them (reason_history).
        "hist_vec": [], "hist_shipped": [], "ref_ts": now,
        "need_text": [_NEED] if need else None, "need_ts": [now] if need else None,
        "need_vec": [unit_vector(seed + 1, n, dim)] if need else None,
        "disliked_items": None, "disliked_vec": None, "rated_items": None, "rated_values": None, "topics": _TOPICS,
    }
    if model is not None:
        seconds = np.array([now.timestamp() - 3600.0 * i for i in range(len(recent))])
        vectors = item_matrix[recent] if recent else np.zeros((0, dim), np.float32)
        row["learned_interest"] = model.user_vector(vectors, kinds, seconds, row["hist_item"]) if recent else None
    return row


def expected_lists(sample, path: str, seed: int, dim: int, history: int, item_ids, item_matrix, model, k: int):
    """user id -> brute-force top K item ids (numpy over the whole catalog; ties by item id)."""
    position = {item: i for i, item in enumerate(item_ids)}
    learned_items = model.item_vectors(item_ids, item_matrix) if path == "learned" else None
    expected = {}
    for n in sample:
        row = user_row(int(n), seed, dim, history, item_ids, item_matrix, model)
        if learned_items is not None:
            scores = (learned_items @ row["learned_interest"]).astype(np.float32)
            for item, value in model.knn_bonus(row["hist_item"]).items():
                scores[position[item]] += value
        else:
            scores = item_matrix @ row["interest"]
        excluded = set(row["excluded"])
        ranked = sorted((i for i in range(len(item_ids)) if item_ids[i] not in excluded), key=lambda i: (-scores[i], item_ids[i]))
        expected[row[C.COL_USER_ID]] = [item_ids[i] for i in ranked[:k]]
    return expected


def _approximate(spark, user_side, items_uri: str, settings, exact_out: str, base: Path) -> dict[str, Any]:
    """Seconds and recall@K of the FAISS retrieval against the exact plain lists of the same users."""
    import importlib.util

    from interestlake.pipeline.scorer import score_users

    if importlib.util.find_spec("faiss") is None:
        return {"skipped": "faiss is not installed (pip install faiss-cpu)"}
    plain = settings.model_copy(update={"steer": settings.steer.model_copy(update={"enabled": False})})
    out = str(base / "approximate")
    started = time.perf_counter()
    score_users(user_side, items_uri, plain, approximate=True).write.mode("overwrite").parquet(out)
    seconds = time.perf_counter() - started
    pairs = [C.COL_USER_ID, C.COL_ITEM_ID]
    found = spark.read.parquet(out).select(*pairs).join(spark.read.parquet(exact_out).select(*pairs), pairs).count()
    total = spark.read.parquet(exact_out).count()
    log.info("bench score: approximate %.1fs", seconds)
    return {"seconds": round(seconds, 2), "recall_at_k_vs_exact": round(found / max(total, 1), 4), "index": "faiss HNSW32"}
