"""Recommend stage: the users whose interests changed -> top-K ``recommendations`` with a reason each.

The stage gathers each scored user's side (``interestlake.pipeline.evidence``), stages
the recommendable items once as a matrix every executor reads, and hands both to the
one scoring path (``interestlake.pipeline.scorer``: retrieval -> re-ranker -> reasons),
on Spark or, for a small batch, on the driver. Neither the users x items matrix nor
the item table is ever collected to the driver or shuffled.
"""

from __future__ import annotations

import json
import logging
import math

import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.lake.uris import readable_uri
from interestlake.models.interest_model import load_model
from interestlake.pipeline.evidence import user_side
from interestlake.pipeline.frames import Rows, with_values
from interestlake.pipeline.gather import Reader, reader
from interestlake.pipeline.history import item_text
from interestlake.pipeline.run import DerivedInputs, RunContext, StageReport, derived_inputs, driver_path
from interestlake.pipeline.scorer import ITEM_MATRIX_ARROW_SCHEMA, ITEM_MATRIX_SCHEMA, SCORE_VECTOR, score_users
from interestlake.settings import Settings

STAGE = "recommend"
log = logging.getLogger("interestlake")
INPUT_TABLES = (C.USER_INTERESTS, C.ITEM_EMBEDDINGS, C.ITEMS, C.EVENTS, C.REVIEWS, C.TEXT_EMBEDDINGS)


def recommend(
    spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext, full: bool = False
) -> StageReport:
    """Re-scores the users whose interests changed and replaces their lists in one commit.

    Every user is re-scored (and the table rewritten) on the first run, when the
    catalog or item vectors changed (a new or changed item can enter anyone's
    top K), when the parameters changed, or with ``full=True``.

    Returns:
        Counts of users scored and rows written, and the input versions read.
    """
    report = StageReport(STAGE, run.run_id)
    version = settings.encoder.version
    model = load_model(settings)
    stale = _model_mismatch(lake, settings.model.version if model else None)
    if stale:
        report.note = stale
        log.warning("recommend: %s", stale)
        return report
    params = {"encoder": version, "model": settings.model.version if model else None, **settings.recommend.model_dump(),
              **({"steer": settings.steer.model_dump()} if settings.steer.enabled else {})}
    inputs = derived_inputs(lake, report, C.RECOMMENDATIONS, INPUT_TABLES, params)
    if not full and inputs.unchanged:
        report.note = "inputs unchanged since the last commit; nothing to do"
        return report
    now = inputs.tables
    incremental = not full and inputs.same_params and not _catalog_changed(lake, inputs)

    since = {t: inputs.since(t) for t in INPUT_TABLES} if incremental else None
    on_driver = driver_path(STAGE, lake, settings, since=since, now=now)
    read = reader(lake, on_driver)
    users = _users(read, version, inputs, incremental)
    n_users = users.num_rows if on_driver else users.count()
    report.counts["users_scored"] = n_users
    if n_users == 0:
        _release(users)
        report.note = "no user's interests changed"
        return report
    side = user_side(read, settings, now, users)
    if not on_driver:
        # By user id: a round-robin repartition sorts every input partition first (so that a
        # retried task gets the same rows), which the hash partitioning needs no sort for.
        side = side.repartition(scoring_tasks(n_users, spark.sparkContext.defaultParallelism), C.COL_USER_ID)
    shared = spark.sparkContext.broadcast(model) if model is not None else None
    items_uri, n_items, staged = item_matrix(lake, version, now, shared, settings.model.version if model else None)
    report.counts["items"] = n_items
    # The approximate index searches encoder space: a learned model's score (with its kNN term) is scanned exactly.
    ann = model is None and settings.recommend.ann_min_items is not None and n_items >= settings.recommend.ann_min_items
    report.counts["approximate"] = int(ann)
    # 1 when this run wrote the item matrix (new catalog, item vectors, encoder or model), 0 when it reused it.
    report.counts["catalog_staged"] = int(staged)
    ranked = score_users(side, items_uri, settings, model=shared, approximate=ann)
    rows = with_values(ranked, {C.COL_RUN_ID: run.run_id, "generated_at": run.timestamp})
    metadata = {
        "stage": STAGE, "run_id": run.run_id, "inputs": inputs.fingerprint,
        "mode": "incremental" if incremental else "full",
    }
    if incremental:
        commit = lake.merge(C.RECOMMENDATIONS, rows, on=[C.COL_USER_ID], txn=run.txn(STAGE), metadata=metadata)
    else:
        commit = lake.overwrite(C.RECOMMENDATIONS, rows, txn=run.txn(STAGE), metadata=metadata)
    _release(users)
    report.commits.append(commit)
    return report


def _users(read: Reader, version: str, inputs: DerivedInputs, incremental: bool) -> Rows:
    """(user_id, interest, recent) of the users to score: all, or those whose interests changed.

    Spark's rows are persisted; the Arrow reader's (a small batch changes few users) are sorted by user.
    """
    now = inputs.tables
    of_version = [(C.COL_ENCODER_VERSION, "=", version)]
    changed = None
    if incremental:
        changed = read.users(read.changed(C.USER_INTERESTS, inputs.since(C.USER_INTERESTS), now[C.USER_INTERESTS],
                                          [C.COL_USER_ID], of_version, identity=_CHANGED_BY))
    # Any number of users may have changed in a large batch: Spark joins them without a broadcast.
    users = read.of_users(C.USER_INTERESTS, now[C.USER_INTERESTS], [C.COL_USER_ID, "interest", "recent"], changed,
                          of_version, few=False)
    return users.persist() if isinstance(users, DataFrame) else read.by_user(users)


# A rewritten user_interests row has a new updated_at; a row a merge only copied keeps its own.
_CHANGED_BY = [C.COL_USER_ID, C.COL_ENCODER_VERSION, C.COL_UPDATED_AT]


def _release(users: DataFrame | pa.Table) -> None:
    if isinstance(users, DataFrame):
        users.unpersist()


def _model_mismatch(lake: LakeTables, applied: str | None) -> str | None:
    """Why the stored user vectors cannot be scored with the interest model this run applies, or None.

    Each Airflow task resolves ``@champion`` when it starts: a promotion between the
    interests task and this one would score vectors of one model against item vectors
    of another. This run then leaves the lists as they are; the next interests run
    recomputes every user with the new model (its parameters changed) and the next
    recommend run scores them.
    """
    last = lake.last_metadata(C.USER_INTERESTS, stage="interests")
    if last is None or "model" not in last or last["model"] == applied:
        return None  # nothing computed yet, or written before models were recorded
    return (
        f"user_interests were computed with interest model {last['model'] or 'none (untrained pooling)'} and this run "
        f"applies {applied or 'none (untrained pooling)'}: recommendations left unchanged until the interests "
        "stage has applied the same model (run interests, or the whole refresh)"
    )


def _catalog_changed(lake: LakeTables, inputs: DerivedInputs) -> bool:
    """True when catalog rows or item vectors changed since the last commit.

    Compaction and vacuum commit new table versions without changing a row;
    they must not make every user be re-scored.
    """
    for table in (C.ITEMS, C.ITEM_EMBEDDINGS):
        since, until = inputs.since(table), inputs.tables[table]
        if since is None or (since != until and not lake.changes(table, since, until).isEmpty()):
            return True
    return False


def item_matrix(
    lake: LakeTables, version: str, versions: dict, model=None, model_version: str | None = None
) -> tuple[str, int, bool]:
    """URI and number of items of the staged item matrix of these input versions, and whether this call staged it.

    Staged by the first run that needs it and kept under ``<lake.root>/_scratch``
    until the catalog, the item vectors, the encoder or the model change: an
    incremental run re-scores a few users against the same items, and staging the
    whole catalog each time would cost more than scoring them. Python workers also
    keep the matrix they read by its URI (``scorer.held_matrix``), so a kept matrix is
    read once per worker, not once per run. A model without a version label is
    staged for each run.
    """
    import uuid

    import pyarrow.dataset as ds

    label = model_version if model is None or model_version else f"unlabelled-{uuid.uuid4().hex}"
    # "layout": the matrix's columns; a matrix kept by an earlier release has others.
    key = {"encoder": version, C.ITEMS: versions[C.ITEMS], C.ITEM_EMBEDDINGS: versions[C.ITEM_EMBEDDINGS], "model": label,
           "layout": 2}
    uri, staged = lake.kept_scratch(
        "recommend-items", json.dumps(key, sort_keys=True), lambda uri: stage_item_matrix(lake, version, versions, uri, model)
    )
    return uri, ds.dataset(readable_uri(uri), format="parquet").count_rows(), staged


def stage_item_matrix(lake: LakeTables, version: str, versions: dict, uri: str, model=None) -> None:
    """Writes the item matrix (``scorer.ITEM_MATRIX_SCHEMA``) of every recommendable item to ``uri``.

    Only items still in the catalog, with a vector of this encoder version, with the
    price and lower-cased text that needs and reasons check. The scoring tasks read
    this matrix block by block, so it is shipped to each executor from storage, never
    collected on the driver. With a learned model (a broadcast ``InterestModel``),
    ``score_vector`` is the model's ``[v_j, b_j]`` of each item, computed on the executors.
    """
    catalog = lake.read(C.ITEMS, versions[C.ITEMS]).select(
        C.COL_ITEM_ID, F.col(C.COL_PRICE).cast("double").alias(C.COL_PRICE), F.lower(item_text()).alias(C.COL_TEXT)
    )
    items = (
        lake.read(C.ITEM_EMBEDDINGS, versions[C.ITEM_EMBEDDINGS])
        .filter(F.col(C.COL_ENCODER_VERSION) == version)
        .select(C.COL_ITEM_ID, C.COL_EMBEDDING)
        .join(catalog, C.COL_ITEM_ID)
        .select(C.COL_ITEM_ID, C.COL_EMBEDDING, C.COL_PRICE, C.COL_TEXT, F.lit(None).cast("array<float>").alias(SCORE_VECTOR))
    )
    if model is not None:
        items = items.mapInArrow(_with_score_vectors(model), ITEM_MATRIX_SCHEMA)
    items.write.mode("overwrite").parquet(uri)


def _with_score_vectors(model):
    """Executor function filling in the learned model's item vectors of item matrix batches."""
    import numpy as np

    def run(batches):
        for batch in batches:
            embeddings = batch.column(C.COL_EMBEDDING)
            matrix = embeddings.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(embeddings), -1)
            vectors = model.value.item_vectors(batch.column(C.COL_ITEM_ID).to_pylist(), matrix)
            offsets = pa.array(np.arange(len(vectors) + 1, dtype=np.int32) * vectors.shape[1])
            scored = pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel(), type=pa.float32()))
            columns = [batch.column(name) for name in ITEM_MATRIX_ARROW_SCHEMA.names[:-1]]
            yield pa.RecordBatch.from_arrays([*columns, scored], schema=ITEM_MATRIX_ARROW_SCHEMA)

    return run


_USERS_PER_TASK = 200_000


def scoring_tasks(users: int, slots: int) -> int:
    """How many scoring tasks for ``users`` users on ``slots`` task slots.

    Tasks stream their users in Arrow batches, so their memory does not grow with
    their size; each task costs a scheduling round and a worker hand-over, so one
    task per slot is best, with more only so that a failed task redoes bounded work.
    """
    return max(1, min(users, max(slots, math.ceil(users / _USERS_PER_TASK))))
