"""The ONNX backends and half precision: faster variants that must keep the vectors of the torch encoder."""

import numpy as np
import pytest

from interestlake import constants as C

from tests.conftest import make_settings

pytestmark = [pytest.mark.spark, pytest.mark.slow]
TEXTS = [
    "Light gauge strings, easy on the fingers.",
    "The tent kept us dry through two nights of rain, but the zipper jammed twice.",
    "pour over kettle",
    "适合初学者的电子琴，音色不错。",
]


def torch_vectors(settings):
    from interestlake.models.encoder import encode_texts, load_encoder, resolve_model_path

    model = load_encoder(resolve_model_path(settings.encoder), "cpu", settings.encoder.max_seq_length)
    return encode_texts(model, TEXTS, 8)


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_onnx_backend_is_exported_once_validated_and_close_to_torch(spark, tmp_path, backend):
    from interestlake.pipeline.encode import embed_texts

    settings = make_settings(tmp_path / "lake", {"INTERESTLAKE__ENCODER__BACKEND": backend})
    texts = spark.createDataFrame([(n, t) for n, t in enumerate(TEXTS)], f"n long, {C.COL_TEXT} string")
    rows = embed_texts(spark, texts, settings, len(TEXTS)).orderBy("n").collect()
    vectors = np.array([r[C.COL_EMBEDDING] for r in rows], dtype=np.float32)
    cosine = np.sum(vectors * torch_vectors(settings), axis=1)
    assert cosine.min() >= (0.9999 if backend == "onnx" else 0.99)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    export = tmp_path / "lake" / "_models" / settings.encoder.version.replace("+", "_") / backend
    assert (export / "model.onnx").is_file() and (export / "validation.json").is_file()
    before = (export / "model.onnx").stat().st_mtime_ns
    embed_texts(spark, texts, settings, len(TEXTS)).count()
    assert (export / "model.onnx").stat().st_mtime_ns == before  # exported once per version


def test_bf16_keeps_the_fp32_vectors(tmp_path):
    from interestlake.models.encoder import encode_texts, load_encoder, resolve_model_path

    settings = make_settings(tmp_path / "lake", {"INTERESTLAKE__ENCODER__PRECISION": "bf16"})
    # load_encoder refuses a precision whose vectors drift below cosine 0.99 on its own sample.
    model = load_encoder(resolve_model_path(settings.encoder), "cpu", 256, precision="bf16")
    cosine = np.sum(encode_texts(model, TEXTS, 8) * torch_vectors(settings), axis=1)
    assert cosine.min() >= 0.99


def test_a_small_batch_is_encoded_by_one_task_and_a_large_one_by_every_slot(spark, tmp_path):
    """Loading the model in another Python worker costs more than a few texts: TEXTS_PER_TASK per task."""
    from interestlake.pipeline.encode import TEXTS_PER_TASK, embed_texts

    settings = make_settings(tmp_path / "lake")
    slots = spark.sparkContext.defaultParallelism
    assert slots >= 2  # the shared session is local[2]
    texts = spark.createDataFrame([(n, t) for n, t in enumerate(TEXTS)], f"n long, {C.COL_TEXT} string")

    def tasks(count: int, **options) -> int:
        return embed_texts(spark, texts, settings, count, **options).rdd.getNumPartitions()

    assert tasks(len(TEXTS)) == 1
    assert tasks(TEXTS_PER_TASK + 1) == 2
    assert tasks(TEXTS_PER_TASK * slots * 10) == slots
    assert tasks(len(TEXTS), per_task=1) == min(slots, len(TEXTS))  # what bench encode asks for


def test_a_worker_keeps_its_encoder_from_one_run_of_the_stage_to_the_next(spark, tmp_path):
    """Each run makes a new UDF, which pyspark's own model cache cannot match: a stream held up to
    three copies of the model in a worker (617 against 771 MiB after six small batches)."""
    from interestlake.pipeline.encode import embed_texts

    settings = make_settings(tmp_path / "lake")
    texts = spark.createDataFrame([(n, t) for n, t in enumerate(TEXTS)], f"n long, {C.COL_TEXT} string")
    expected, runs, loads = torch_vectors(settings), 4, []
    for _ in range(runs):  # as four stream batches, one small task each
        counter = spark.sparkContext.accumulator(0)
        rows = embed_texts(spark, texts, settings, len(TEXTS), counter).orderBy("n").collect()
        assert np.allclose(np.array([r[C.COL_EMBEDDING] for r in rows]), expected, atol=1e-5)
        loads.append(counter.value)
    # At most one load per Python worker the tasks landed on, not one per run.
    assert sum(loads) <= spark.sparkContext.defaultParallelism < runs, loads
