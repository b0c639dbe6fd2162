"""Training the interest model from the lake: data preparation in Spark, fitting in torch.

``history_data`` reads one consistent set of table versions and builds, with
Spark, what the trainer needs: every user's history entries as references
(user, time, kind, item) and each entry's vector row, plus the catalog's item
vectors. Only the distinct vectors (catalog items and the texts users wrote or
searched) and the small reference rows reach the driver, never a vector per
entry.

``train_model`` fits on the driver (``model.trainer: driver``; CUDA when the
driver has a GPU), or, for histories too large for one process, through
``pyspark.ml.torch.distributor.TorchDistributor`` (``model.trainer:
distributor``): the prepared history is saved under the lake's ``_scratch``
folder, ``model.num_processes`` processes (Spark barrier tasks on a cluster, one
GPU each when ``spark.task.resource.gpu.amount`` is set; local processes in
local mode) load it and train data-parallel (``DistributedDataParallel``, each
process a share of every epoch's examples), and rank 0 writes the model back there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.lake.uris import readable_uri
from interestlake.models.training import HistoryData, TrainParams, TrainResult, train
from interestlake.pipeline.gather import SparkReader
from interestlake.pipeline.history import history_refs, history_rows
from interestlake.settings import Settings

log = logging.getLogger("interestlake")
INPUT_TABLES = (C.EVENTS, C.REVIEWS, C.ITEMS, C.TEXT_EMBEDDINGS, C.ITEM_EMBEDDINGS)


def history_data(lake: LakeTables, encoder_version: str, versions: Mapping[str, int]) -> HistoryData:
    """Every user's embedded history and the catalog's item vectors at ``versions``.

    Entries without a vector (unknown item, text not encoded yet) are left out,
    as the interests stage leaves them out.
    """
    of_version = F.col(C.COL_ENCODER_VERSION) == encoder_version
    catalog = (
        lake.read(C.ITEM_EMBEDDINGS, versions[C.ITEM_EMBEDDINGS]).filter(of_version)
        .join(lake.read(C.ITEMS, versions[C.ITEMS]).select(C.COL_ITEM_ID), C.COL_ITEM_ID, "left_semi")
        .select(C.COL_ITEM_ID, C.COL_EMBEDDING)
    )
    refs = history_refs(history_rows(SparkReader(lake), versions)).select(
        C.COL_USER_ID, (F.col(C.COL_TS).cast("double")).alias("seconds"), "kind", C.COL_ITEM_ID, C.COL_TEXT_HASH
    ).persist()
    texts = (
        lake.read(C.TEXT_EMBEDDINGS, versions[C.TEXT_EMBEDDINGS]).filter(of_version)
        .join(refs.select(C.COL_TEXT_HASH).distinct(), C.COL_TEXT_HASH, "left_semi")
        .select(C.COL_TEXT_HASH, C.COL_EMBEDDING)
    )
    items = catalog.toPandas().sort_values(C.COL_ITEM_ID, kind="stable").reset_index(drop=True)
    text_rows = texts.toPandas()
    entries = refs.toPandas()
    refs.unpersist()
    dim = len(items[C.COL_EMBEDDING].iloc[0]) if len(items) else (len(text_rows[C.COL_EMBEDDING].iloc[0]) if len(text_rows) else 0)
    vectors = np.zeros((len(items) + len(text_rows), dim), np.float32)
    if len(items):
        vectors[: len(items)] = np.stack(items[C.COL_EMBEDDING].to_numpy())
    if len(text_rows):
        vectors[len(items):] = np.stack(text_rows[C.COL_EMBEDDING].to_numpy())
    item_row = pd.Series(np.arange(len(items)), index=pd.Index(items[C.COL_ITEM_ID]))
    text_row = pd.Series(np.arange(len(text_rows)) + len(items), index=pd.Index(text_rows[C.COL_TEXT_HASH]))
    by_text = entries[C.COL_TEXT_HASH].notna()
    vec = np.where(
        by_text,
        text_row.reindex(entries[C.COL_TEXT_HASH].to_numpy()).fillna(-1).to_numpy(),
        item_row.reindex(entries[C.COL_ITEM_ID].to_numpy()).fillna(-1).to_numpy(),
    ).astype(np.int64)
    entries = entries.assign(vec=vec, has_text=by_text)[vec >= 0].drop(columns=C.COL_TEXT_HASH).reset_index(drop=True)
    return HistoryData(vectors, entries, items[C.COL_ITEM_ID].to_numpy(dtype=object), np.arange(len(items)))


def train_params(settings: Settings) -> TrainParams:
    """The trainer's hyper-parameters from conf ``model``."""
    conf = settings.model
    return TrainParams(**{name: getattr(conf, name) for name in TrainParams.__dataclass_fields__ if hasattr(conf, name)})


def train_model(lake: LakeTables, settings: Settings) -> tuple[TrainResult, dict[str, int]]:
    """Fits the interest model on the lake's current tables.

    Returns:
        (the fitted model and its validation metrics, the table versions it was trained on).

    Raises:
        ValueError: Too little data to train on.
    """
    versions = lake.versions(INPUT_TABLES)
    data = history_data(lake, settings.encoder.version, versions)
    log.info("train: %d history entries of %d users, %d catalog items",
             len(data.entries), data.entries[C.COL_USER_ID].nunique(), len(data.item_ids))
    from interestlake.models.interest import InterestParams

    context, params = settings.interests.short_term_events, train_params(settings)
    if settings.model.trainer == "distributor":
        # Each process gets the cores of its task.
        threads = int(lake.spark.conf.get("spark.task.cpus", "1"))
    else:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    params = dataclasses.replace(params, threads=params.threads or threads)
    if settings.model.trainer == "distributor":
        result = _distributed(lake, settings, data, context, params)
    else:
        result = train(data, context, params, _device(settings), zero_shot=InterestParams(**settings.interests.model_dump()))
    result.model.meta.update({"encoder_version": settings.encoder.version,
                              "data_versions": {table: int(v) for table, v in versions.items()}})
    return result, versions


def _distributed(lake: LakeTables, settings: Settings, data: HistoryData, context: int, params: TrainParams) -> TrainResult:
    """Runs ``distributed_train`` under TorchDistributor on the saved history."""
    import pickle

    import pyarrow.fs as pafs
    from pyspark.ml.torch.distributor import TorchDistributor

    from interestlake.models.training import RESULT_FILE, distributed_train

    spark = lake.spark
    local = spark.sparkContext.master.startswith("local")
    gpus = spark.conf.get("spark.task.resource.gpu.amount", None) is not None or (local and _device(settings) == "cuda")
    with lake.scratch("train") as folder:
        data.save(readable_uri(folder))
        distributor = TorchDistributor(num_processes=settings.model.num_processes, local_mode=local, use_gpu=gpus)
        distributor.run(distributed_train, readable_uri(folder), context, dict(params.__dict__), settings.interests.model_dump())
        fs, base = pafs.FileSystem.from_uri(readable_uri(folder))
        try:
            with fs.open_input_file(f"{base}/{RESULT_FILE}") as stream:
                return pickle.load(stream)
        except FileNotFoundError:
            raise RuntimeError("TorchDistributor finished but rank 0 wrote no model") from None


def _device(settings: Settings) -> str:
    if settings.encoder.device == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
