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


def unit_vector(seed: int, index: int, dim: int) -> np.ndarray:
    """The benchmark's vector number ``index``: reproducible anywhere from (seed, index)."""
    vector = np.random.default_rng([seed, index]).standard_normal(dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def score_benchmark(
    users: int = 20_000, items: int = 5_000, k: int = 10, dim: int = 384, conf: str | None = None,
    check_users: int = 200, workdir: str | None = None, seed: int = 11, ann: bool = True,
) -> dict[str, Any]:
    """Seconds to top-K every user: our ``score_users`` vs ALS ``recommendForAllUsers`` (rank 64).

    Users and items are random unit vectors, written to Parquet before the
    timing. Ours multiplies user blocks by the item matrix block by block (the
    recommend stage's scoring, with its partitioning), after a warm-up call; ALS
    is fitted on random implicit interactions of the same users and items first,
    and only its recommend call is timed. Both write their full result (Spark's noop
    sink for ALS, Parquet for ours, whose lists are checked against a brute-force
    numpy top-K on ``check_users`` users). Peak memory is sampled during ours.
    With ``ann`` (and faiss installed), the approximate FAISS path is timed too
    and its recall@K against the exact lists reported.

    Returns:
        ``{"benchmark": "score", "users", "items", "k", "ours_seconds",
        "als_seconds", "ratio", "exact_top_k_equal", peak memory, ...}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    from interestlake.benchmarks.memory import peak_memory
    from interestlake.pipeline.recommend import score_users, scoring_tasks
    from interestlake.settings import load_settings
    from interestlake.spark_session import spark_session

    base = Path(workdir or tempfile.mkdtemp(prefix="interestlake-bench-score-"))
    env = {"INTERESTLAKE__LAKE__ROOT": str(base / "lake"), "INTERESTLAKE__SPARK__LOG_LEVEL": "ERROR"}
    settings = load_settings(conf, env={**os.environ, **env})
    recommend = settings.recommend.model_copy(update={"k": k})

    item_ids = [f"item-{n:07d}" for n in range(items)]
    item_matrix = np.stack([unit_vector(seed, users + n, dim) for n in range(items)])
    items_uri = str(base / "items")
    Path(items_uri).mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({C.COL_ITEM_ID: item_ids, C.COL_EMBEDDING: list(item_matrix)}),
        f"{items_uri}/items.parquet",
    )

    def user_rows(batches):
        for batch in batches:
            ids = batch.column("id").to_numpy()
            yield pa.RecordBatch.from_pydict({
                C.COL_USER_ID: [f"user-{n:07d}" for n in ids],
                "interest": [unit_vector(seed, int(n), dim) for n in ids],
            })

    with spark_session(settings) as spark:
        slots = spark.sparkContext.defaultParallelism
        tasks = scoring_tasks(users, slots)
        # The users' interest vectors exist before the timing, as ALS's factors do.
        users_uri = str(base / "users")
        (
            spark.range(users, numPartitions=tasks)
            .mapInArrow(user_rows, f"{C.COL_USER_ID} string, interest array<float>")
            .withColumn("excluded", F.lit(None).cast("array<string>"))
            .withColumn("hist_kind", F.lit(None).cast("array<string>"))
            .withColumn("hist_item", F.lit(None).cast("array<string>"))
            .withColumn("hist_label", F.lit(None).cast("array<string>"))
            .withColumn("hist_vec", F.lit(None).cast("array<array<float>>"))
            .write.mode("overwrite").parquet(users_uri)
        )
        user_side = spark.read.parquet(users_uri)
        # Warm-up, as ALS is warm from its fit: start the Python workers, import the scoring code.
        score_users(user_side.limit(slots), items_uri, recommend).write.format("noop").mode("overwrite").save()
        ours_out = str(base / "ours")
        with peak_memory() as peaks:
            started = time.perf_counter()
            score_users(user_side.repartition(tasks), items_uri, recommend).write.mode("overwrite").parquet(ours_out)
            ours_seconds = time.perf_counter() - started
        log.info("bench score: ours %.1fs", ours_seconds)
        approximate = _approximate(spark, user_side, items_uri, recommend, ours_out, base) if ann else None

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
        started = time.perf_counter()
        als.recommendForAllUsers(k).write.format("noop").mode("overwrite").save()
        als_seconds = time.perf_counter() - started
        log.info("bench score: ALS %.1fs", als_seconds)

        checked = np.random.default_rng(seed).choice(users, size=min(check_users, users), replace=False)
        wanted = {f"user-{n:07d}" for n in checked}
        got: dict[str, list[tuple[int, str]]] = {}
        for row in spark.read.parquet(ours_out).filter(F.col(C.COL_USER_ID).isin(list(wanted))).collect():
            got.setdefault(row[C.COL_USER_ID], []).append((row[C.COL_RANK], row[C.COL_ITEM_ID]))
        exact = len(got) == len(wanted)
        for n in checked:
            scores = item_matrix @ unit_vector(seed, int(n), dim)
            expected = sorted(range(items), key=lambda i: (-scores[i], item_ids[i]))[:k]
            exact &= [item for _, item in sorted(got.get(f"user-{n:07d}", []))] == [item_ids[i] for i in expected]
    return {
        "benchmark": "score",
        "users": users,
        "items": items,
        "k": k,
        "dim": dim,
        "ours_seconds": round(ours_seconds, 2),
        "als_seconds": round(als_seconds, 2),
        "ratio": round(ours_seconds / als_seconds, 3),
        "exact_top_k_equal": bool(exact),
        "checked_users": int(len(checked)),
        "user_block_size": recommend.user_block_size,
        "item_block_size": recommend.item_block_size,
        **peaks.as_dict(),
        "approximate": approximate,
        "workdir": str(base),
    }


def _approximate(spark, user_side, items_uri: str, recommend, exact_out: str, base: Path) -> dict[str, Any]:
    """Seconds and recall@K of the FAISS path against the exact lists of the same users."""
    import importlib.util

    from interestlake.pipeline.recommend import score_users

    if importlib.util.find_spec("faiss") is None:
        return {"skipped": "faiss is not installed (pip install faiss-cpu)"}
    out = str(base / "approximate")
    started = time.perf_counter()
    score_users(user_side, items_uri, recommend, approximate=True).write.mode("overwrite").parquet(out)
    seconds = time.perf_counter() - started
    pairs = [C.COL_USER_ID, C.COL_ITEM_ID]
    found = spark.read.parquet(out).select(*pairs).join(spark.read.parquet(exact_out).select(*pairs), pairs).count()
    total = spark.read.parquet(exact_out).count()
    log.info("bench score: approximate %.1fs", seconds)
    return {"seconds": round(seconds, 2), "recall_at_k_vs_exact": round(found / max(total, 1), 4), "index": "faiss HNSW32"}
