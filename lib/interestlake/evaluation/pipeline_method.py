"""Our method in the harness: the real encode -> interests -> recommend stages on the training part.

The training part of a split is written into an evaluation lake through the
table layer (``events``, ``reviews``, ``items`` replaced in one commit each),
then the pipeline's own stages run on it with every user recomputed
(``full=True``) and K = the longest list the metrics need. The evaluation lake
is kept per dataset: ``text_embeddings`` is a cache keyed by text hash and
encoder version, so a second evaluation of the same dataset encodes nothing new.

Seen items are excluded the pipeline's way, by ``recommend.exclude_event_types``
set to every item event type (and reviewed items, which are always excluded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from interestlake import constants as C
from interestlake.datasets.public import PublicDataset, items_from_reviews
from interestlake.evaluation.protocols import ITEM_EVENT_TYPES, training_texts
from interestlake.lake.schemas import arrow_schema, table_spec
from interestlake.models.training import TrainResult
from interestlake.settings import Settings

log = logging.getLogger("interestlake")
METHOD = "interestlake"
# The same pipeline without a learned model: the untrained pooling.
ZERO_SHOT = "interestlake_zero_shot"
# The learned model trained and applied without any encoder vector (ids, kinds, positions, times).
NO_TEXT = "interestlake_no_text"
STAGES = ("encode", "interests", "recommend")


@dataclass(frozen=True)
class TrainingTables:
    """What the pipeline is given: the training part as lake table rows."""

    events: pd.DataFrame
    reviews: pd.DataFrame
    items: pd.DataFrame


def training_tables(dataset: PublicDataset, train: pd.DataFrame, item_source: pd.DataFrame | None = None) -> TrainingTables:
    """Events, reviews and catalog rows of the training part of a split.

    Events and reviews are those about training interactions written no later
    than the user's last training interaction (``training_texts``). The catalog
    holds the training items: with their metadata when the dataset has it, else
    with a text built from training reviews only.

    Args:
        dataset: The whole dataset.
        train: Training interactions (user_id, item_id, ts).
        item_source: Reviews to build item texts from when there is no metadata
            (default: this training part's reviews). The cold-start pass hands in the
            full training part's reviews so that item texts stay the same.
    """
    events = training_texts(dataset.events, train)
    reviews = training_texts(dataset.reviews, train)
    catalog = pd.Index(train[C.COL_ITEM_ID].unique())
    if dataset.items is not None:
        items = dataset.items[dataset.items[C.COL_ITEM_ID].isin(catalog)]
    else:
        items = items_from_reviews(reviews if item_source is None else item_source)
        items = items[items[C.COL_ITEM_ID].isin(catalog)]
    return TrainingTables(events.reset_index(drop=True), reviews.reset_index(drop=True), items.reset_index(drop=True))


def evaluation_settings(settings: Settings, lake_root: str, k: int) -> Settings:
    """Settings of the evaluation lake: its own root, K recommendations, every seen item excluded."""
    lake = settings.lake.model_copy(update={"root": lake_root, "landing": None})
    recommend = settings.recommend.model_copy(update={"k": k, "exclude_event_types": list(ITEM_EVENT_TYPES)})
    return settings.model_copy(update={"lake": lake, "recommend": recommend})


def pipeline_recommendations(
    spark,
    settings: Settings,
    tables: TrainingTables,
    run_id: str,
    model_versions: dict[str, int] | None = None,
    variants: dict[str, Settings] | None = None,
    train_to: dict[str, Settings] | None = None,
) -> tuple[dict[str, pd.DataFrame], list, dict[str, TrainResult]]:
    """Replaces the evaluation lake's inputs with ``tables``, encodes, and recommends with each variant.

    Args:
        spark: Active session.
        settings: Settings from ``evaluation_settings`` (lake root = the evaluation lake).
        tables: Training rows.
        run_id: Recorded in the rows and in ``pipeline_runs``.
        model_versions: Registered model versions to record in ``pipeline_runs``.
        variants: Name -> settings of the interests and recommend stages (default:
            ``{"interestlake": settings}``); each variant recomputes every user.
        train_to: Folder -> settings: an interest model is first trained on these tables
            with each settings' ``model`` and saved to its folder (variants name it with ``model.uri``).

    Returns:
        (recommendations per variant as user_id, item_id, rank, score; the stage reports;
        the training result of each folder of ``train_to``).
    """
    from interestlake.lake.lock import writer_lock
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.refresh import Pipeline
    from interestlake.pipeline.run import RunContext

    variants = variants or {METHOD: settings}
    trained: dict[str, TrainResult] = {}
    recs: dict[str, pd.DataFrame] = {}
    with writer_lock(settings.lake.root, run_id):
        lake = open_lake(spark, settings.lake)
        lake.ensure_tables()
        source = f"evaluation:{run_id}"
        for table, rows in ((C.EVENTS, tables.events), (C.REVIEWS, tables.reviews), (C.ITEMS, tables.items)):
            lake.overwrite(table, _spark_frame(spark, table, rows.assign(source=source, run_id=run_id)),
                           metadata={"stage": "evaluation", "run_id": run_id})
        # Derived rows of an earlier evaluation must not survive into this one.
        for table in (C.USER_INTERESTS, C.RECOMMENDATIONS):
            lake.overwrite(table, spark.createDataFrame([], table_spec(table).schema),
                           metadata={"stage": "evaluation", "run_id": run_id})
        reports = [Pipeline(spark, lake, settings, dict(model_versions or {})).run_stage("encode", RunContext.create(run_id))]
        for folder, train_settings in (train_to or {}).items():
            from interestlake.pipeline.train import train_model

            trained[folder], _ = train_model(lake, train_settings)
            trained[folder].model.save(folder)
            log.info("evaluate: interest model trained (%s): %s", folder, trained[folder].metrics)
        for name, variant in variants.items():
            pipeline = Pipeline(spark, lake, variant, dict(model_versions or {}))
            run = RunContext.create(f"{run_id}__{name}")
            reports += [pipeline.run_stage(stage, run, full=True) for stage in STAGES[1:]]
            recs[name] = (
                lake.read(C.RECOMMENDATIONS)
                .select(C.COL_USER_ID, C.COL_ITEM_ID, C.COL_RANK, C.COL_SCORE)
                .toPandas()
            )
    for report in reports:
        log.info("evaluate: %s", report.summary())
    return recs, reports, trained


def _spark_frame(spark, table: str, rows: pd.DataFrame):
    """A Spark DataFrame of ``rows`` typed by the table's schema (columns absent from rows stay out)."""
    import pyarrow as pa
    from pyspark.sql import types as T

    spec = table_spec(table)
    fields = [T.StructField(f.name, f.dataType, True) for f in spec.schema.fields if f.name in rows.columns]
    schema = arrow_schema(T.StructType(fields))
    frame = rows[[f.name for f in fields]].astype(object).where(rows[[f.name for f in fields]].notna(), None)
    return spark.createDataFrame(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
