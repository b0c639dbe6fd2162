"""Encode stage: texts -> ``text_embeddings`` (cache) and items -> ``item_embeddings``.

Only review and query texts written since the last successful run are looked
at, only texts whose hash is not yet cached for the current encoder version are
encoded, each distinct text once; item vectors are rewritten only for items
whose text changed.
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.tables import LakeHistoryGone, LakeTables
from interestlake.models.encoder import encode_texts, load_encoder, prepare_backend, resolve_model_path
from interestlake.pipeline.frames import Rows, with_values
from interestlake.pipeline.gather import Reader, SparkReader, reader
from interestlake.pipeline.history import item_text, text_hash, texts_to_encode
from interestlake.pipeline.run import RunContext, StageReport, driver_path, last_progress, log, params_digest
from interestlake.settings import Settings

STAGE = "encode"
INPUT_TABLES = (C.ITEMS, C.REVIEWS, C.EVENTS)


def encode(spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext) -> StageReport:
    """Encodes new texts and refreshes item vectors.

    Args:
        spark: Active session.
        lake: Table layer.
        settings: Loaded settings (``encoder`` section).
        run: Run identity.

    Returns:
        Counts of texts found, texts encoded and item vectors written.
    """
    version = settings.encoder.version
    report = StageReport(STAGE, run.run_id, params=params_digest({"encoder": version}))
    metadata = {"stage": STAGE, "run_id": run.run_id, "encoder_version": version}
    now = lake.versions(INPUT_TABLES)
    report.read_versions = now
    # Reviews and queries written since the last successful run with this encoder;
    # after a crash this re-reads a little more, which the cache absorbs.
    since = last_progress(lake, STAGE, report.params)
    # The last successful run wrote a vector for every item of the catalog it read.
    catalog_changed = since is None or since.get(C.ITEMS) != now[C.ITEMS]
    try:
        read = reader(lake, driver_path(STAGE, lake, settings, since=since, now=now))
        todo, pending = _texts_to_encode(read, version, now, since, catalog_changed)
    except LakeHistoryGone as exc:
        # Paused for longer than the log retention: every text is looked up in the cache again.
        log.warning("encode: %s; looking at every text", exc)
        report.note = f"looked at every text: {exc}"
        since, catalog_changed = None, True
        todo, pending = _texts_to_encode(SparkReader(lake), version, now, since, catalog_changed)
    report.counts["texts_to_encode"] = pending
    if pending:
        log.info("encode: %d new text(s) with %s", pending, version)
        on_driver = isinstance(todo, pa.Table)
        if on_driver:
            # As many threads as one executor task's: the driver shares the machine with them.
            encoded, driver_loads = embed_on_driver(todo, settings, int(spark.conf.get("spark.task.cpus", "1")))
        else:
            counter = spark.sparkContext.accumulator(0)
            encoded = embed_texts(spark, todo, settings, pending, counter)
        encoded = with_values(encoded, {C.COL_ENCODER_VERSION: version, C.COL_RUN_ID: run.run_id,
                                        "encoded_at": run.timestamp})
        report.commits.append(lake.append(C.TEXT_EMBEDDINGS, encoded, txn=run.txn(STAGE), metadata=metadata))
        # Processes (Python workers on the executors, or this driver) that loaded the model for
        # this run; the accumulator is read after the commit, the action that ran the encoder.
        report.counts["encoder_loads"] = driver_loads if on_driver else counter.value
    if isinstance(todo, DataFrame):
        todo.unpersist()
    if catalog_changed:
        report.counts["item_vectors_written"] = _refresh_item_vectors(lake, version, now, run, report, metadata)
    else:
        report.counts["item_vectors_written"] = 0
    return report


def _texts_to_encode(read: Reader, version: str, now: dict, since: dict | None, catalog: bool) -> tuple[Rows, int]:
    """(text_hash, text) of the new texts not in the cache, and how many.

    With Spark's reader, Spark jobs (a persisted DataFrame); with the Arrow reader (a small
    batch, no catalog), the cache is probed with the batch's own hashes on the driver and the
    texts still to encode are an Arrow table, encoded on the driver (``embed_on_driver``);
    usually there are none.
    """
    todo = read.absent_from(texts_to_encode(read, now, since, catalog=catalog), C.TEXT_EMBEDDINGS, C.COL_TEXT_HASH,
                            [(C.COL_ENCODER_VERSION, "=", version)])
    if isinstance(todo, DataFrame):
        todo = todo.persist()
        return todo, todo.count()
    return todo, todo.num_rows


# Fewest texts worth a task of their own. Importing torch and loading MiniLM in one more Python
# worker costs about 7 CPU-seconds, what encoding some 180 review-length texts costs on one core
# (26 texts/s per core; short queries go ~220/s). So tens of texts on Spark (a small batch is
# encoded on the driver, ``embed_on_driver``) go to one worker instead of loading the model on
# every slot, which on a busy machine cost more time than it saved; a few hundred texts on up
# are spread over the slots.
TEXTS_PER_TASK = 200


def embed_texts(
    spark: SparkSession, texts: DataFrame, settings: Settings, count: int, loads=None, per_task: int = TEXTS_PER_TASK
) -> DataFrame:
    """``texts`` with an ``embedding`` column computed by the encoder on the executors.

    The texts are spread over the task slots (each slot runs ``spark.task.cpus``
    intra-op threads, so slots x threads = cores), at least ``per_task`` per task,
    and sorted by length inside each partition, so consecutive model batches hold
    texts of similar length and pad little. The model loads once per Python worker
    that gets a task.

    Args:
        spark: Active session.
        texts: A DataFrame with a ``text`` column.
        settings: Loaded settings (``encoder``, ``lake.root`` for an ONNX export).
        count: How many texts there are (caps the number of tasks).
        loads: Optional Spark accumulator counting the model loads on the executors.
        per_task: Fewest texts per task (1: one task per slot whenever there are enough
            texts, as ``bench encode`` measures the rate of every slot).
    """
    slots = spark.sparkContext.defaultParallelism
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    onnx_folder = prepare_backend(settings.encoder, settings.lake.root)
    udf = encoder_udf(settings.encoder, threads, onnx_folder, loads)
    return (
        texts.repartition(max(1, min(slots, -(-count // max(1, per_task)))))
        .sortWithinPartitions(F.length(C.COL_TEXT))
        .withColumn(C.COL_EMBEDDING, udf(F.col(C.COL_TEXT)))
    )


def _refresh_item_vectors(lake: LakeTables, version: str, now: dict, run: RunContext, report: StageReport, metadata: dict) -> int:
    """Writes a new ``item_embeddings`` row for every catalog item whose text changed; returns how many."""
    vectors = lake.read(C.TEXT_EMBEDDINGS).filter(F.col(C.COL_ENCODER_VERSION) == version)
    items = lake.read(C.ITEMS, now[C.ITEMS]).select(C.COL_ITEM_ID, text_hash(item_text()).alias(C.COL_TEXT_HASH))
    stored = lake.read(C.ITEM_EMBEDDINGS).filter(F.col(C.COL_ENCODER_VERSION) == version)
    changed = (
        items.join(stored.select(C.COL_ITEM_ID, C.COL_TEXT_HASH), [C.COL_ITEM_ID, C.COL_TEXT_HASH], "left_anti")
        .join(vectors.select(C.COL_TEXT_HASH, C.COL_EMBEDDING), C.COL_TEXT_HASH)
        .withColumn(C.COL_ENCODER_VERSION, F.lit(version))
        .withColumn(C.COL_RUN_ID, F.lit(run.run_id))
        .withColumn(C.COL_UPDATED_AT, F.lit(run.timestamp))
        .persist()
    )
    written = changed.count()
    if written:
        report.commits.append(lake.merge(C.ITEM_EMBEDDINGS, changed, txn=run.txn(STAGE), metadata=metadata))
    changed.unpersist()
    return written


# Per process (a Python worker, or the driver of a small batch): the encoder it loaded last.
# predict_batch_udf keeps a model per UDF only
# (pyspark keys its cache by a uuid made for each UDF, and keeps three), and every run of the
# stage makes a new UDF: a stream's every batch with texts loaded the model again, and a worker
# held three copies of it (771 against 617 MiB after six small batches).
_HELD_ENCODER: dict[tuple, object] = {}


def held_encoder(key: tuple) -> tuple[object, bool]:
    """This process's encoder for ``key`` (the encoder's version, then ``load_encoder``'s
    arguments), and whether it was loaded now.

    A module-level function, so the UDF's closure reaches this module's cache: the closure
    is pickled by value, and a dict it named directly would travel as a fresh copy.
    """
    if key not in _HELD_ENCODER:
        _HELD_ENCODER.clear()
        _HELD_ENCODER[key] = load_encoder(*key[1:])
        return _HELD_ENCODER[key], True
    return _HELD_ENCODER[key], False


def embed_on_driver(texts: pa.Table, settings: Settings, threads: int) -> tuple[pa.Table, int]:
    """A small batch's ``(text_hash, text)`` with their ``embedding``, encoded in this process.

    A near-line batch holds a few searches and reviews. On an executor they would wait for a
    Python worker, and Spark stops a worker that has been idle for a minute (a fixed limit),
    so after a quiet minute the next search paid a new worker's start, torch's import and the
    model's load: encode 5.4 s, the search in its list 7.4 s after it landed, against 0.1 s
    and 2.7 s now (a stream on the demo lake). The driver of a stream lives as long as the
    stream and keeps its encoder (``held_encoder``); a ``refresh`` process loads it once.
    ``encoder.device: cuda`` runs here on CUDA only when this machine has a GPU, else on the
    CPU: a driver need not have the executors' GPUs, and a few texts do not need one.

    Returns:
        (the rows with ``embedding``, 1 when the model was loaded for them else 0).
    """
    encoder = settings.encoder
    device = "auto" if encoder.device == "cuda" else encoder.device
    key = _encoder_key(encoder, device, threads, prepare_backend(encoder, settings.lake.root))
    model, loaded = held_encoder(key)
    vectors = encode_texts(model, texts.column(C.COL_TEXT).to_pylist(), encoder.batch_size)
    embedding = pa.FixedSizeListArray.from_arrays(vectors.reshape(-1), vectors.shape[1]).cast(pa.list_(pa.float32()))
    return texts.append_column(C.COL_EMBEDDING, embedding), int(loaded)


def _encoder_key(encoder: EncoderSettings, device: str, threads: int, onnx_folder: str | None) -> tuple:
    """``held_encoder``'s key: the encoder's version, then ``load_encoder``'s arguments."""
    model_path = resolve_model_path(encoder)
    # A registered model is loaded from the store the driver resolved it in.
    tracking = _driver_tracking_uri() if model_path.startswith("models:/") and not onnx_folder else None
    return (encoder.version, model_path, device, encoder.max_seq_length, threads, tracking, encoder.precision, onnx_folder)


def encoder_udf(encoder: EncoderSettings, threads_per_task: int = 1, onnx_folder: str | None = None, loads=None):
    """A ``predict_batch_udf`` mapping a string column to its embedding.

    The model loads once per Python worker (``held_encoder`` keeps it from one run of
    the stage to the next) and each task uses ``threads_per_task`` torch threads, so
    tasks x threads matches the executor's cores instead of oversubscribing them.

    Args:
        encoder: Encoder settings.
        threads_per_task: Intra-op threads of each task's model.
        onnx_folder: The export ``prepare_backend`` made, for the ONNX backends.
        loads: Optional Spark accumulator (int) that each model load adds 1 to, on
            the executor that loads it: the driver sees how many Python workers
            loaded the model (a reload per task would show here).
    """
    from pyspark.ml.functions import predict_batch_udf

    batch_size = encoder.batch_size
    key = _encoder_key(encoder, encoder.device, threads_per_task, onnx_folder)

    def make_predict_fn():
        model, loaded = held_encoder(key)
        if loaded and loads is not None:
            loads.add(1)

        def predict(texts):
            return encode_texts(model, texts, batch_size)

        return predict

    # Several model batches per Arrow batch, so sentence-transformers can sort
    # texts by length inside it and pad less.
    return predict_batch_udf(make_predict_fn, return_type=T.ArrayType(T.FloatType()), batch_size=batch_size * 8)


def _driver_tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()
