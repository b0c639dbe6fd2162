"""Forgetting a user: their rows leave every table, then their files leave the disk.

``interestlake forget USER_ID`` deletes, each table in one commit: the user's
events and reviews, their interests and recommendations, the ``quarantine``
rows whose raw text carries their id, and the cached embeddings of texts that
only they wrote (a text another user also wrote, or an item text, stays: it is
no longer theirs alone). With pseudonymisation on, the id is also looked up as
its pseudonym. Then every touched table is vacuumed: files removed more than
``maintenance.vacuum_retention_hours`` ago are deleted now, the files this run
removed by the next vacuum after that window (the daily maintenance), so the
data is physically gone one retention window after the forget.
"""

from __future__ import annotations

import json
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.pipeline.history import item_text, query_texts, review_texts, text_hash
from interestlake.pipeline.run import RunContext, StageReport, log
from interestlake.privacy import pseudonymizer
from interestlake.settings import Settings

STAGE = "forget"
# Tables holding a user_id column, deleted by it.
_BY_USER = (C.EVENTS, C.REVIEWS, C.USER_INTERESTS, C.USER_TOPICS, C.RECOMMENDATIONS)


def forget(spark: SparkSession, lake: LakeTables, settings: Settings, user_id: str, run: RunContext) -> StageReport:
    """Removes one user from every table, then vacuums the tables it touched.

    Args:
        spark: Active session.
        lake: Table layer (the writer lock must be held).
        settings: Loaded settings (``privacy``, ``maintenance``).
        user_id: The user's id as the platform knows it (not its pseudonym).
        run: Run identity (recorded in the commits' metadata; the id is not).

    Returns:
        Rows deleted per table (``<table>_deleted``) and files vacuumed. Nothing
        in it, in the commits or in the logs names the user.
    """
    user_id = user_id.strip()
    if not user_id:
        raise ValueError("forget needs a non-empty user id")
    ids = [user_id]
    pseudonym = pseudonymizer(settings)
    if pseudonym is not None:
        ids.append(pseudonym(user_id))
    report = StageReport(STAGE, run.run_id)
    metadata = {"stage": STAGE, "run_id": run.run_id}
    users = spark.createDataFrame([(i,) for i in ids], f"{C.COL_USER_ID} string")
    versions = lake.versions([*_BY_USER, C.TEXT_EMBEDDINGS, C.QUARANTINE, C.ITEMS, C.ITEM_EMBEDDINGS])
    report.read_versions = versions
    # Computed from the versions read before any delete; those files stay on disk
    # until the vacuum below, whichever way Spark evaluates the plans.
    doomed = {
        C.EVENTS: users,
        C.REVIEWS: users,
        C.TEXT_EMBEDDINGS: _texts_only_they_wrote(lake, versions, users),
        C.QUARANTINE: _quarantined_rows(lake, versions, ids),
        # Derived tables last: their commits record the inputs after the deletes above.
        C.USER_INTERESTS: users,
        # Key phrases of the user's own texts (steering topics).
        C.USER_TOPICS: users,
        C.RECOMMENDATIONS: users,
    }
    for table, keys in doomed.items():
        on = [C.COL_USER_ID] if table in _BY_USER else None
        carried = _carried_inputs(lake, table, versions, run)
        commit = lake.delete(table, keys, on=on, metadata=carried or metadata)
        report.commits.append(commit)
        report.counts[f"{table}_deleted"] = commit.source_rows
    report.counts["files_vacuumed"] = _vacuum(lake, settings, [c.table for c in report.commits if c.committed])
    log.info("forget: removed one user from %d table(s)", sum(c.committed for c in report.commits))
    return report


def _carried_inputs(lake: LakeTables, table: str, before: dict[str, int], run: RunContext) -> dict | None:
    """Metadata that carries a derived table's recorded inputs over the forget, when they were current.

    ``user_interests`` and ``recommendations`` record the input versions they were
    computed from; vacuum keeps every file of those versions. If the table was up
    to date before the forget, it is up to date after it too (the other users' rows
    did not change), so its forget commit records the inputs as they are now, on
    behalf of its stage: the files holding the user then stop being "in use" and
    the next vacuum after the retention window deletes them, and the next refresh
    has nothing to redo. A table that was behind keeps its record; its stage's next
    commit moves it on.
    """
    from interestlake.pipeline import interests, recommend

    derived = {C.USER_INTERESTS: (interests.STAGE, interests.INPUT_TABLES),
               C.RECOMMENDATIONS: (recommend.STAGE, recommend.INPUT_TABLES)}
    if table not in derived:
        return None
    stage, inputs = derived[table]
    recorded = (lake.last_metadata(table, stage=stage) or {}).get("inputs")
    if not recorded or any(recorded["tables"].get(name) != before[name] for name in inputs):
        return None
    now = lake.versions(inputs)
    return {"stage": stage, "run_id": run.run_id, "mode": "forget", "inputs": {"tables": now, "params": recorded["params"]}}


def _texts_only_they_wrote(lake: LakeTables, versions: dict[str, int], users: DataFrame) -> DataFrame:
    """Keys (text_hash, encoder_version) of cached texts no other user and no item has."""

    def written(include: bool) -> DataFrame:
        how = "left_semi" if include else "left_anti"
        events = lake.read(C.EVENTS, versions[C.EVENTS]).join(users, C.COL_USER_ID, how)
        reviews = lake.read(C.REVIEWS, versions[C.REVIEWS]).join(users, C.COL_USER_ID, how)
        texts = query_texts(events).select(C.COL_TEXT).unionByName(review_texts(reviews).select(C.COL_TEXT))
        return texts.select(text_hash(F.col(C.COL_TEXT)).alias(C.COL_TEXT_HASH))

    items = lake.read(C.ITEMS, versions[C.ITEMS]).select(text_hash(item_text()).alias(C.COL_TEXT_HASH))
    item_vectors = lake.read(C.ITEM_EMBEDDINGS, versions[C.ITEM_EMBEDDINGS]).select(C.COL_TEXT_HASH)
    shared = written(False).unionByName(items).unionByName(item_vectors)
    theirs = written(True).distinct().join(shared, C.COL_TEXT_HASH, "left_anti")
    return (
        lake.read(C.TEXT_EMBEDDINGS, versions[C.TEXT_EMBEDDINGS])
        .join(theirs, C.COL_TEXT_HASH, "left_semi")
        .select(C.COL_TEXT_HASH, C.COL_ENCODER_VERSION)
    )


def _quarantined_rows(lake: LakeTables, versions: dict[str, int], ids: list[str]) -> DataFrame:
    """Keys of quarantine rows whose raw row names one of ``ids``.

    A row that parses as JSON is matched on its ``user_id``; any raw text is also
    matched on the id as a JSON string (``"u-1"``), which finds it in cut-off or
    otherwise broken rows without matching ids that merely contain it.
    """
    raw = F.col("raw")
    quoted = [raw.contains(json.dumps(i, ensure_ascii=False)) | raw.contains(json.dumps(i)) for i in ids]
    named = F.get_json_object(raw, f"$.{C.COL_USER_ID}").isin(ids) | reduce(lambda a, b: a | b, quoted)
    return lake.read(C.QUARANTINE, versions[C.QUARANTINE]).filter(raw.isNotNull() & named).select(
        "source", C.COL_RUN_ID, "row_no"
    )


def _vacuum(lake: LakeTables, settings: Settings, tables: list[str]) -> int:
    """Vacuums the given tables as the daily maintenance would; returns the files deleted."""
    from interestlake.pipeline.maintain import vacuum, versions_in_use

    if not tables:
        return 0
    in_use = versions_in_use(lake)
    retention = settings.maintenance.vacuum_retention_hours
    return sum(vacuum(lake, t, retention, in_use.get(t, set())).counts["files_deleted"] for t in tables)
