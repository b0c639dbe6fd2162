"""``bench encode``: our encode stage through Spark vs the bare encoder on the same cores."""

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
# Review lengths in words: log-normal around 45 words with a long tail, as in
# product reviews (Amazon 2014 Musical Instruments: median 57, mean 87 words).
_MEDIAN_WORDS, _SIGMA, _MAX_WORDS = 45, 0.8, 400
_WARM_UP_TEXTS = 64


def review_like_texts(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct review-length English texts, lengths drawn log-normally."""
    from interestlake.datasets.sample import review_sentences

    sentences = review_sentences()
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(_MEDIAN_WORDS), _SIGMA, count), 3, _MAX_WORDS).astype(int)
    texts = []
    for number, words in enumerate(lengths):
        picked: list[str] = []
        while sum(len(s.split()) for s in picked) < words:
            picked.append(sentences[rng.integers(len(sentences))])
        # The number keeps every text distinct: the stage would encode a repeated text once.
        texts.append(f"Review {number}. " + " ".join(picked))
    return texts


def encode_benchmark(
    texts: int = 4000, conf: str | None = None, onnx: bool = True, workdir: str | None = None, seed: int = 7
) -> dict[str, Any]:
    """Texts per second of the bare ``SentenceTransformer.encode`` and of our Spark encode stage.

    (a) the bare encoder in this process with one torch thread per core; (b) our
    stage's encoding step (``embed_texts``: Spark tasks, predict_batch_udf,
    length-sorted partitions) on the same cores, nothing cached; (c) with
    ``onnx``, the same Spark step with the ``onnx-int8`` backend, and its cosine
    to the bare vectors. Model loading is not timed: each side encodes a few
    texts first.

    Returns:
        ``{"benchmark": "encode", "texts", "bare_texts_per_s", "spark_texts_per_s",
        "ratio", "onnx": {...}, ...}``.
    """
    from interestlake.models.encoder import encode_texts, load_encoder, resolve_model_path
    from interestlake.pipeline.encode import embed_texts
    from interestlake.settings import load_settings
    from interestlake.spark_session import spark_session

    base = Path(workdir or tempfile.mkdtemp(prefix="interestlake-bench-encode-"))
    env = {"INTERESTLAKE__LAKE__ROOT": str(base / "lake"), "INTERESTLAKE__SPARK__LOG_LEVEL": "ERROR"}
    settings = load_settings(conf, env={**os.environ, **env})
    corpus = review_like_texts(texts, seed)
    with spark_session(settings) as spark:
        cores = spark.sparkContext.defaultParallelism
        encoder = settings.encoder
        model = load_encoder(resolve_model_path(encoder), encoder.device, encoder.max_seq_length, threads=cores)
        encode_texts(model, corpus[:_WARM_UP_TEXTS], encoder.batch_size)
        started = time.perf_counter()
        bare = encode_texts(model, corpus, encoder.batch_size)
        bare_rate = texts / (time.perf_counter() - started)
        log.info("bench encode: bare %.1f texts/s", bare_rate)
        del model

        def spark_rate(run_settings) -> tuple[float, np.ndarray]:
            frame = spark.createDataFrame([(n, t) for n, t in enumerate(corpus)], f"n long, {C.COL_TEXT} string")
            warm = frame.limit(_WARM_UP_TEXTS * cores)
            # One task per slot (per_task=1), in the warm-up too: every worker has loaded the model before the timing.
            embed_texts(spark, warm, run_settings, _WARM_UP_TEXTS * cores, per_task=1).write.format("noop").mode("overwrite").save()
            out = str(base / f"vectors-{run_settings.encoder.backend}")
            started = time.perf_counter()
            embed_texts(spark, frame, run_settings, texts, per_task=1).select("n", C.COL_EMBEDDING).write.mode("overwrite").parquet(out)
            rate = texts / (time.perf_counter() - started)
            rows = spark.read.parquet(out).orderBy("n").collect()
            return rate, np.array([r[C.COL_EMBEDDING] for r in rows], dtype=np.float32)

        ours, ours_vectors = spark_rate(settings)
        log.info("bench encode: spark %.1f texts/s", ours)
        result: dict[str, Any] = {
            "benchmark": "encode",
            "texts": texts,
            "cores": cores,
            "median_words": int(np.median([len(t.split()) for t in corpus])),
            "bare_texts_per_s": _figure(bare_rate),
            "spark_texts_per_s": _figure(ours),
            "ratio": round(ours / bare_rate, 3),
            "spark_min_cosine_to_bare": round(float(np.min(np.sum(ours_vectors * bare, axis=1))), 5),
        }
        if onnx:
            int8 = load_settings(conf, env={**os.environ, **env, "INTERESTLAKE__ENCODER__BACKEND": "onnx-int8"})
            rate, vectors = spark_rate(int8)
            cosine = np.sum(vectors * bare, axis=1)
            result["onnx"] = {
                "backend": "onnx-int8",
                "spark_texts_per_s": _figure(rate),
                "ratio_to_bare_torch": round(rate / bare_rate, 3),
                "mean_cosine_to_torch": round(float(cosine.mean()), 5),
                "min_cosine_to_torch": round(float(cosine.min()), 5),
            }
            log.info("bench encode: onnx-int8 %.1f texts/s", rate)
    result["workdir"] = str(base)
    return result


def _figure(rate: float) -> float:
    """A rate to three significant figures: a loaded machine's 0.55 texts/s must not print as 0.6."""
    return float(f"{rate:.3g}")

