"""``bench/cuda.py``: the scoring path and the encoder on CUDA against the same code on the CPU, in one process.

For a GPU machine without Java or Spark (the lent one has PyTorch and CUDA, not a JVM):
what runs in a Spark task is run here directly.

- **Scoring**: the recommend stage's partition scorer (``pipeline.scorer.score_users`` on an
  Arrow table, the small-batch driver path: the same function Spark's ``mapInArrow`` calls)
  on ``bench score``'s users and items, with ``recommend.device`` ``cpu`` and then ``cuda``;
  one thread for numpy and torch on the CPU as one Spark task has (``bench/cuda.py`` sets the
  thread variables before numpy loads; a caller of this function sets its own). The lists are checked
  against ``bench score``'s brute-force top K.
- **Encoding**: ``models.encoder.encode_texts`` (what the encode stage's UDF runs) on
  ``bench encode``'s review-like texts, on the CPU with every core, then on CUDA in fp32 (at the
  configured batch size and at 256), fp16 and bf16 (at 256); each timed twice, the faster reported.

Spark ALS cannot run without a JVM, so no ratio to ALS comes from here: ``bench score``
measures that on a machine with Spark.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("interestlake")
_WARM_UP_USERS = 256
_WARM_UP_TEXTS = 64
_GPU_BATCH = 256
_ENCODE_PASSES = 2


class _Held:
    """What ``score_users`` expects of a Spark broadcast: the value under ``.value``."""

    def __init__(self, value):
        self.value = value


def cuda_benchmark(
    users: int = 20_000, items: int = 5_000, k: int = 10, dim: int = 384, texts: int = 4_000, conf: str | None = None,
    seed: int = 11, check_users: int = 200, model_path: str | None = None, workdir: str | None = None,
    devices: tuple[str, ...] = ("cpu", "cuda"),
) -> dict[str, Any]:
    """Seconds of the scoring path and texts/s of the encoder on each of ``devices``.

    Args:
        users, items, k, dim: The scoring benchmark's size (as ``bench score``); 0 users skips scoring.
        texts: Review-like texts encoded (as ``bench encode``); 0 skips encoding.
        conf: Settings file (``recommend``, ``steer``, ``encoder``, ``model`` shapes).
        seed: Seed of users, items and the random model.
        check_users: Users whose lists are compared with the brute-force top K.
        model_path: Encoder folder; default the configured one (``resolve_model_path``).
        workdir: Where the item matrix is written; default a new temporary folder.
        devices: ``cpu`` and/or ``cuda``.

    Returns:
        ``{"benchmark": "cuda", "gpu", "score": {path: {device: {...}}}, "encode": {...}}``.
    """
    from interestlake.settings import load_settings

    base = Path(workdir or tempfile.mkdtemp(prefix="interestlake-bench-cuda-"))
    settings = load_settings(conf, env={**os.environ, "INTERESTLAKE__LAKE__ROOT": str(base / "lake")})
    settings = settings.model_copy(update={"recommend": settings.recommend.model_copy(update={"k": k})})
    result: dict[str, Any] = {"benchmark": "cuda", "gpu": _gpu_name(), "cpu_cores": os.cpu_count(), "users": users,
                              "items": items, "k": k, "dim": dim}
    if users:
        result["score"] = _score(settings, users, items, k, dim, seed, check_users, base, devices)
    if texts:
        result["encode"] = _encode(settings, texts, model_path, devices)
    result["workdir"] = str(base)
    return result


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _score(settings, users: int, items: int, k: int, dim: int, seed: int, check_users: int, base: Path,
           devices: tuple[str, ...]) -> dict[str, Any]:
    """Per path (learned, plain) and device: seconds to score every user, and whether the lists are exact."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from interestlake import constants as C
    from interestlake.benchmarks import score as bench
    from interestlake.pipeline.scorer import score_users

    history = settings.interests.short_term_events
    item_ids, item_matrix = bench.catalog(users, items, dim, seed)
    model = bench.random_model(item_ids, item_matrix, settings, seed)
    uris = bench.write_items(base, item_ids, item_matrix, model, seed)
    started = time.perf_counter()
    table = pa.Table.from_pylist(
        [bench.user_row(n, seed, dim, history, item_ids, item_matrix, model) for n in range(users)],
        schema=bench.user_schema(model),
    )
    log.info("bench cuda: %d users built in %.1fs", users, time.perf_counter() - started)
    # The learned path's users carry the model's user vector as their interest, as the stage stores it.
    learned = table.drop_columns(["interest"]).rename_columns(
        ["interest" if name == "learned_interest" else name for name in table.schema.names if name != "interest"])
    plain_table = table.drop_columns(["learned_interest"])
    plain = settings.model_copy(update={"steer": settings.steer.model_copy(update={"enabled": False})})
    runs = {"learned": (learned, uris["learned_items"], settings, _Held(model)),
            "plain": (plain_table, uris["items"], plain, None)}
    checked = np.random.default_rng(seed).choice(users, size=min(check_users, users), replace=False)
    out: dict[str, Any] = {}
    for path, (user_table, uri, path_settings, held) in runs.items():
        sample = [int(n) for n in checked if path == "plain" or n % bench.NEED_EVERY]
        expected = bench.expected_lists(sample, path, seed, dim, history, item_ids, item_matrix, model, k)
        out[path] = {}
        for device in devices:
            on_device = path_settings.model_copy(
                update={"recommend": path_settings.recommend.model_copy(update={"device": device})})
            score_users(user_table.slice(0, _WARM_UP_USERS), uri, on_device, model=held)  # reads the matrix, warms CUDA
            started = time.perf_counter()
            ranked = score_users(user_table, uri, on_device, model=held)
            seconds = time.perf_counter() - started
            wanted = ranked.filter(pc.is_in(ranked[C.COL_USER_ID], pa.array(list(expected))))
            got: dict[str, list[tuple[int, str]]] = {}
            for row in wanted.to_pylist():
                got.setdefault(row[C.COL_USER_ID], []).append((row[C.COL_RANK], row[C.COL_ITEM_ID]))
            out[path][device] = {
                "seconds": round(seconds, 3), "us_per_user": round(1e6 * seconds / users, 1),
                "exact_top_k_equal": all([i for _, i in sorted(got.get(u, []))] == want for u, want in expected.items()),
                "checked_users": len(expected),
            }
            log.info("bench cuda: score %s on %s %.2fs", path, device, seconds)
        if "cpu" in out[path] and "cuda" in out[path]:
            out[path]["cuda_speedup"] = round(out[path]["cpu"]["seconds"] / out[path]["cuda"]["seconds"], 3)
    return out


def _encode(settings, texts: int, model_path: str | None, devices: tuple[str, ...]) -> dict[str, Any]:
    """Texts/s of the bare encoder per device, precision and batch size, and the cosine of CUDA's vectors to the CPU's."""
    import torch

    from interestlake.benchmarks.encode import review_like_texts
    from interestlake.models.encoder import encode_texts, load_encoder, resolve_model_path

    encoder = settings.encoder
    path = model_path or resolve_model_path(encoder)
    corpus = review_like_texts(texts)
    cores = os.cpu_count() or 1
    variants = []
    if "cpu" in devices:
        variants.append(("cpu", "fp32", encoder.batch_size))
    if "cuda" in devices:
        variants += [("cuda", "fp32", encoder.batch_size), ("cuda", "fp32", _GPU_BATCH), ("cuda", "fp16", _GPU_BATCH),
                     ("cuda", "bf16", _GPU_BATCH)]
    out: dict[str, Any] = {"texts": texts, "configured_batch_size": encoder.batch_size, "runs": []}
    reference = None
    for device, precision, batch in variants:
        model = load_encoder(path, device, encoder.max_seq_length, threads=cores if device == "cpu" else None,
                             precision=precision)
        encode_texts(model, corpus[:_WARM_UP_TEXTS], batch)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        # Timed twice: a first pass over texts of every length may pay for kernels chosen per shape.
        timings = []
        for _ in range(_ENCODE_PASSES):
            started = time.perf_counter()
            vectors = encode_texts(model, corpus, batch)
            timings.append(time.perf_counter() - started)
        seconds = min(timings)
        run = {"device": device, "precision": precision, "batch_size": batch, "threads": cores if device == "cpu" else None,
               "texts_per_s": float(f"{texts / seconds:.4g}"),
               "passes_texts_per_s": [float(f"{texts / t:.4g}") for t in timings]}
        if device == "cuda":
            run["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if reference is None:
            reference = vectors
        else:
            run["min_cosine_to_first"] = round(float(np.min(np.sum(vectors * reference, axis=1))), 5)
        out["runs"].append(run)
        log.info("bench cuda: encode %s %s batch %d: %.1f texts/s", device, precision, batch, texts / seconds)
        del model
    return out
