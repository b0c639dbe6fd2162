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
