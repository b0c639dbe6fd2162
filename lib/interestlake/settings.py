"""Typed, validated settings loaded from YAML files and the environment.

A conf file may name a parent with ``extends: <path>`` (relative to the file);
keys of the child override the parent's. Environment variables override any
key: ``INTERESTLAKE__<SECTION>__<KEY>[__<SUBKEY>...]=<yaml value>``.

Every problem is reported at once, before any Spark work starts, as one
``SettingsError`` naming each offending key and the file (or environment
variable) it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from interestlake import constants as C

DEFAULT_CONF = Path("conf/local.yaml")
ENV_PREFIX = "INTERESTLAKE__"
# Set by `interestlake --conf` so that spark-submitted jobs and Airflow tasks can
# find the same file without repeating the flag.
CONF_ENV_VAR = "INTERESTLAKE_CONF"


class SettingsError(ValueError):
    """Raised when a conf file or an environment override is invalid."""


class _Section(BaseModel):
    # Unknown keys are errors: a typo must never silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LakeSettings(_Section):
    """Where the Delta tables and the landing files live."""

    root: str = Field(min_length=1)
    landing: str | None = None
    backend: Literal["delta-rs", "delta-spark"] = "delta-rs"
    storage_options: dict[str, str] = Field(default_factory=dict)

    @field_validator("root", "landing")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """Resolves local relative paths now, so executors and later cwd changes agree."""
        if value is None or "://" in value:
            return value
        return str(Path(value).expanduser().resolve())

    @field_validator("storage_options")
    @classmethod
    def _no_dynamodb_lock(cls, value: dict[str, str]) -> dict[str, str]:
        """A lock delta-rs ignores would let a user believe two writers are safe."""
        if any(key.upper() == "AWS_S3_LOCKING_PROVIDER" for key in value):
            raise ValueError(
                "AWS_S3_LOCKING_PROVIDER (the DynamoDB lock) is not supported by delta-rs 1.x: "
                "commits to AWS S3 use S3 conditional writes without any lock; for S3-compatible "
                "stores set aws_conditional_put: etag instead"
            )
        return value

    def table_uri(self, table: str) -> str:
        """URI of one Delta table under the lake root."""
        return f"{self.root.rstrip('/')}/{table}"

    @property
    def landing_uri(self) -> str:
        """Landing folder with one sub-folder per landing kind."""
        return self.landing or f"{self.root.rstrip('/')}/landing"


# Jobs whose Spark applications can get properties of their own (``spark.stage_conf``).
JOBS = ("ingest", "encode", "interests", "recommend", "maintain")
_GPU_EXECUTOR = "spark.executor.resource.gpu.amount"
_GPU_TASK = "spark.task.resource.gpu.amount"
_GPU_SCRIPT = "spark.executor.resource.gpu.discoveryScript"
_GPU_VENDOR = "spark.executor.resource.gpu.vendor"


class SparkSettings(_Section):
    """How the Spark session is built; ``conf`` is passed to the builder as is.

    ``stage_conf`` adds properties to the session of a command that runs a given
    job (``interestlake encode`` / ``jobs/encode.py`` for ``encode``); a refresh,
    which runs the four stages in one application, gets those of all four.
    """

    master: str = Field(min_length=1)
    app_name: str = "interestlake"
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict)
    stage_conf: dict[Literal[JOBS], dict[str, str]] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return _spark_strings(value)

    @field_validator("stage_conf", mode="before")
    @classmethod
    def _stringify_stages(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: _spark_strings(v) for k, v in value.items()}
        return value

    def conf_for(self, jobs: Sequence[str] = ()) -> dict[str, str]:
        """``conf`` plus the ``stage_conf`` of each job an application runs."""
        merged = dict(self.conf)
        for job in jobs:
            merged.update(self.stage_conf.get(job, {}))
        return merged

    @model_validator(mode="after")
    def _gpu_amounts(self) -> SparkSettings:
        """Spark checks GPU amounts only when executors start, on the cluster: check them now."""
        for jobs in [(), *((job,) for job in self.stage_conf)]:
            problem = _gpu_problem(self.conf_for(jobs), self.master)
            if problem:
                where = f"spark.stage_conf.{jobs[0]} with spark.conf" if jobs else "spark.conf"
                raise ValueError(f"{where}: {problem}")
        return self


class EncoderSettings(_Section):
    """The text encoder run inside the Spark UDFs.

    ``version`` is the cache key of the embedding tables. A backend or precision
    whose vectors differ from fp32 torch ones (``onnx-int8``, ``fp16``, ``bf16``)
    adds a suffix to it (``all-MiniLM-L6-v2+onnx-int8``), so vectors of different
    precision never mix in one cache.
    """

    model_path: str | None = None
    # A local model_path must lie under one of these folders (the packaged default
    # model and registered models need none); weights load from safetensors only.
    allowed_roots: list[str] = Field(default_factory=list)
    version: str = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(gt=0)
    max_seq_length: int = Field(gt=0, le=8192)
    backend: Literal["torch", "onnx", "onnx-int8"] = "torch"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"

    @model_validator(mode="after")
    def _variant_in_cache_key(self) -> EncoderSettings:
        if self.backend != "torch" and self.precision != "fp32":
            raise ValueError("encoder.precision applies to the torch backend; the ONNX backends run their own precision")
        variant = {"onnx-int8": "onnx-int8"}.get(self.backend) or {"fp16": "fp16", "bf16": "bf16"}.get(self.precision)
        if variant and not self.version.endswith(f"+{variant}"):
            # frozen model: set through the object's dict, once, at validation.
            object.__setattr__(self, "version", f"{self.version}+{variant}")
        return self


class InterestSettings(_Section):
    """How user interest vectors are built from their history."""

    half_life_days: float = Field(gt=0)
    event_weights: dict[str, float]
    short_term_events: int = Field(gt=0)
    attention_temperature: float = Field(gt=0)
    long_term_weight: float = Field(ge=0, le=1)

    @field_validator("event_weights")
    @classmethod
    def _known_event_types(cls, value: dict[str, float]) -> dict[str, float]:
        """Every event type needs a weight, and a misspelt type would be silently unused."""
        expected = set(C.EVENT_TYPES) | {C.EVENT_REVIEW}
        unknown = sorted(set(value) - expected)
        missing = sorted(expected - set(value))
        if unknown:
            raise ValueError(f"unknown event type(s) {unknown}; expected {sorted(expected)}")
        if missing:
            raise ValueError(f"missing weight(s) for {missing}")
        negative = sorted(k for k, v in value.items() if v < 0)
        if negative:
            raise ValueError(f"weights must be >= 0, got negative for {negative}")
        return value


class RecommendSettings(_Section):
    """Top-K scoring of users against items."""

    k: int = Field(gt=0, le=1000)
    exclude_event_types: list[Literal["view", "click", "cart", "purchase", "search", "rate"]]
    user_block_size: int = Field(gt=0)
    item_block_size: int = Field(gt=0)
    # Item matrices up to this size stay in each Python worker across tasks; larger ones are streamed.
    item_cache_mb: int = Field(default=512, ge=0)
    # Block products on CUDA (torch) or the CPU (numpy); auto: CUDA when the executor has a GPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Catalogs of at least this many items use an approximate FAISS index; None: always exact.
    ann_min_items: int | None = Field(default=None, gt=0)
    # A reason says "Similar to <entry>" only when the item's cosine to that entry is at least this.
    reason_min_similarity: float = Field(default=0.3, ge=-1.0, le=1.0)


class SampleSettings(_Section):
    """Size of the generated sample data of `interestlake demo`."""

    seed: int = 42
    users: int = Field(gt=0)
    items: int = Field(gt=0)
    days: int = Field(gt=0)


class MlflowSettings(_Section):
    """Where evaluations and encoder versions are tracked."""

    # None: sqlite:///<lake.root>/mlflow/mlflow.db (a local lake root is then required).
    tracking_uri: str | None = None
    # None: <lake.root>/mlflow/artifacts; MLflow's own default would be ./mlruns of the cwd.
    artifact_location: str | None = None
    experiment: str = Field(default="interestlake-evaluation", min_length=1)
    encoder_model: str = Field(default="interestlake-encoder", min_length=1)


class ALSGridSettings(_Section):
    """The small grid searched for the ALS baseline on a validation split."""

    ranks: list[int] = Field(default=[32, 64], min_length=1)
    reg_params: list[float] = Field(default=[0.01, 0.1], min_length=1)
    alphas: list[float] = Field(default=[1.0, 10.0], min_length=1)
    max_iter: int = Field(default=10, gt=0)


def _default_peer_grids() -> dict[str, dict[str, list[Any]]]:
    return {
        "sasrec": {"embedding_dim": [64], "n_epochs": [10], "max_len": [50], "dropout": [0.2, 0.5]},
        "bert4rec": {"embedding_dim": [64], "n_epochs": [10], "max_len": [50], "dropout": [0.2]},
        "implicit_als": {"factors": [64, 128], "regularization": [0.01, 0.1], "alpha": [1.0, 10.0], "iterations": [15]},
        "implicit_bpr": {"factors": [64, 128], "learning_rate": [0.01, 0.05], "regularization": [0.01],
                         "iterations": [100]},
        "ease": {"lamb": [100.0, 500.0, 2000.0], "posB": [False]},
        "bivae": {"k": [50], "encoder_structure": [[100]], "likelihood": ["pois"], "n_epochs": [100, 200],
                  "batch_size": [128], "learning_rate": [0.001]},
    }


class PeersSettings(_Section):
    """The peers of the evaluation (``evaluation/peers.py``): threads and each one's grid.

    A grid maps the library model's keyword arguments to the values tried; every
    combination is fitted on the validation split.
    """

    threads: int = Field(default=2, gt=0)
    grids: dict[str, dict[str, list[Any]]] = Field(default_factory=_default_peer_grids)

    @field_validator("grids")
    @classmethod
    def _known(cls, value: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        known = set(_default_peer_grids())
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown peer(s) {unknown}; peers are {sorted(known)}")
        empty = sorted(f"{name}.{key}" for name, grid in value.items() for key, values in grid.items() if not values)
        if empty:
            raise ValueError(f"empty grid value list(s): {empty}")
        # A peer left out of the conf keeps its default grid.
        return {**_default_peer_grids(), **value}


class EvaluationSettings(_Section):
    """Offline evaluation (``interestlake evaluate``); CLI flags override."""

    # None: <lake.root>/evaluation; one lake per dataset below it keeps the embedding cache.
    lake_root: str | None = None
    seed: int = 42
    k: int = Field(default=10, gt=0)
    # Recommendations per user computed for the metric curves (K = 1..max_k).
    max_k: int = Field(default=50, gt=0, le=1000)
    stratified_ratio: float = Field(default=0.75, gt=0, lt=1)
    temporal_quantile: float = Field(default=0.8, gt=0, lt=1)
    # cold_* metrics: each test user's training history cut to its last N interactions.
    cold_history: int = Field(default=3, gt=0)
    als: ALSGridSettings = Field(default_factory=ALSGridSettings)
    peers: PeersSettings = Field(default_factory=PeersSettings)

    @field_validator("lake_root")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return LakeSettings._absolute(value)


class ModelSettings(_Section):
    """The learned interest model (``interestlake train`` / ``promote``) and which version the pipeline applies."""

    name: str = Field(default="interestlake-interest-model", min_length=1)
    # null: the registered model's @champion when there is one, else the untrained pooling;
    # "none": always the untrained pooling; models:/NAME/VERSION or models:/NAME@ALIAS;
    # or a local folder holding a saved model. Commands resolve it once, when they start.
    uri: str | None = None
    # Label of the model version the stages apply (set by that resolution; rows of
    # user_interests and recommendations are computed with it).
    version: str | None = None
    # driver: fit in the driver process (CUDA when it has a GPU); distributor: fit in
    # `num_processes` processes of pyspark.ml.torch.distributor.TorchDistributor
    # (data-parallel, one GPU each when the cluster has them).
    trainer: Literal["driver", "distributor"] = "driver"
    num_processes: int = Field(default=2, gt=0)
    dim: int = Field(default=64, gt=0)
    input_dim: int = Field(default=96, gt=0)
    epochs: int = Field(default=25, gt=0)
    patience: int = Field(default=3, gt=0)
    # None: 512 for the next-item objective, 256 for held-out.
    batch_size: int | None = Field(default=None, gt=0)
    # None: 3e-3 for the next-item objective, 5e-4 for held-out.
    learning_rate: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    neighbors: int = Field(default=100, gt=0)
    max_examples_per_user: int = Field(default=1024, gt=0)
    max_softmax_items: int = Field(default=4096, gt=0)
    sampled_negatives: int = Field(default=1024, gt=0)
    seed: int = 42
    # next-item: learn to predict each interaction from what came before it, validated on
    # each user's last one; held-out: random sets of a user's interactions from all the
    # rest, validated on a per-item random split (what `evaluate --protocol stratified` uses).
    objective: Literal["next-item", "held-out"] = "next-item"
    # The user vector also reads the whole history (a learned factor, gated against the
    # recent sequence); false: the recent sequence alone; None: on for the held-out objective only.
    long_term: bool | None = None
    held_out_rate: float = Field(default=0.25, gt=0, lt=1)
    masks_per_user: int = Field(default=16, gt=0)
    validation_ratio: float = Field(default=0.75, gt=0, lt=1)
    # torch's threads for the fit; 0: the cores this process may use (spark.task.cpus in a
    # TorchDistributor process).
    threads: int = Field(default=0, ge=0)
    # false: the model reads no encoder vector at all (evaluate's interestlake_no_text).
    text: bool = True
    # The items a training example has seen leave its softmax (they are never recommended);
    # None: on for the held-out objective only.
    exclude_seen: bool | None = None
    # Rank of the whole-history item-to-item term (EASE kept at this rank); 0: none; None: 64
    # for the held-out objective, 0 for next-item. history_l2: its ridge penalty;
    # history_items: the most-interacted items it covers (a dense inversion of that size).
    history_rank: int | None = Field(default=None, ge=0)
    history_l2: float = Field(default=500.0, gt=0)
    history_items: int = Field(default=8000, ge=2)


class MaintenanceSettings(_Section):
    """Daily table maintenance (``interestlake maintain``): retention of files and rows."""

    # A vacuum deletes only files removed from their table at least this long ago, so a
    # reader that started within the last hour never loses a file it is reading.
    vacuum_retention_hours: int = Field(default=24, ge=1)
    quarantine_retention_days: int = Field(default=30, gt=0)
    pipeline_runs_retention_days: int = Field(default=90, gt=0)
    # Rows of landing files recorded longer ago; a file still held keeps its rows.
    landing_files_retention_days: int = Field(default=90, gt=0)


class PrivacySettings(_Section):
    """Protection of user data at ingest."""

    # Replace user ids by a keyed HMAC pseudonym (interestlake.privacy) before anything is stored.
    pseudonymize_user_ids: bool = False
    # Name of the environment variable holding the HMAC key. The key itself is never
    # a setting: conf files are read by many and copied around.
    key_env: str = Field(default="INTERESTLAKE_PSEUDONYM_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
class SteerTopicsSettings(_Section):
    """Interest topics from what users write (``user_topics``)."""

    enabled: bool = True
    # Topics kept per user, heaviest first.
    max_topics: int = Field(default=8, gt=0, le=100)
    # A phrase's weight halves every this many days before the user's newest text.
    half_life_days: float = Field(default=30.0, gt=0)
    # Texts read per user (newest first): bounds the work per changed user.
    max_texts: int = Field(default=200, gt=0)


class SteerNeedsSettings(_Section):
    """Typed needs: fresh search queries become constraints and the first slots of the list."""

    enabled: bool = True
    # A need's freshness halves every this many hours after the query, counted up to the
    # user's newest activity (not the wall clock: unchanged users are not re-scored).
    half_life_hours: float = Field(default=24.0, gt=0)
    # Queries older than this (before the user's newest activity) are not needs any more.
    max_age_days: float = Field(default=7.0, gt=0)
    # Newest queries per user considered.
    max_queries: int = Field(default=3, gt=0, le=20)
    # Share of the K slots a fully fresh need takes (the rest follow the interests).
    share: float = Field(default=0.6, ge=0, le=1)
    # Bonus per fraction of the query's words found in an item's title, category or description.
    term_weight: float = Field(default=0.5, ge=0)
    # Under a learned model: bonus for the model's score of the item for this user, scaled to
    # [0, 1] over the candidates, so a need brings the user's kind of item within its bounds.
    model_weight: float = Field(default=0.2, ge=0)


class SteerNegativeSettings(_Section):
    """Negative feedback: low ratings and negative review text push interests away (off by default:
    it lowered the Amazon and MovieLens leave-last-out numbers, docs/evaluation.md)."""

    enabled: bool = False
    # Ratings at or below this are dislikes (1-2 stars), and so is a review at or below
    # review_text_max_rating whose text is negative (interestlake.models.feedback).
    max_rating: float = Field(default=2.0, ge=0)
    review_text_max_rating: float = Field(default=3.0, ge=0)
    # Weight of a disliked entry in the long-term vector (negative: away from it).
    weight: float = Field(default=-3.0, le=0)
    # Candidates lose this times their cosine to the closest disliked item.
    demote: float = Field(default=0.5, ge=0)


class SteerMultiInterestSettings(_Section):
    """Several interests per user: clusters of the recent history, each retrieving its own candidates
    (off by default: it lowered the Amazon leave-last-out numbers, docs/evaluation.md)."""

    enabled: bool = False
    max_interests: int = Field(default=3, ge=1, le=10)
    # Recent entries join one cluster while their average cosine stays at or above this.
    min_similarity: float = Field(default=0.35, ge=-1, le=1)
    # Clusters holding less than this share of the recent entries are not interests of their own.
    min_share: float = Field(default=0.2, gt=0, le=1)
    # A cluster's query vector: normalize((1 - w) * interest + w * cluster centre).
    cluster_weight: float = Field(default=0.5, ge=0, le=1)


class SteerSettings(_Section):
    """What users write steers their lists: topics, needs, negative feedback, several interests, MMR, reasons.

    ``enabled: false`` turns the whole re-ranking off (plain cosine top K, the earlier behaviour).
    """

    enabled: bool = True
    # Candidates retrieved per query vector (interest, cluster, need): this times K.
    pool_factor: int = Field(default=4, ge=1, le=100)
    # Maximal marginal relevance: pick argmax (1 - w) * relevance - w * max cosine to the
    # items already listed. 0 = off.
    mmr_weight: float = Field(default=0.0, ge=0, lt=1)
    topics: SteerTopicsSettings = Field(default_factory=SteerTopicsSettings)
    needs: SteerNeedsSettings = Field(default_factory=SteerNeedsSettings)
    negative: SteerNegativeSettings = Field(default_factory=SteerNegativeSettings)
    multi_interest: SteerMultiInterestSettings = Field(default_factory=SteerMultiInterestSettings)


class SmallBatchSettings(_Section):
    """Small batches run on the driver (Arrow and delta-rs) instead of as Spark jobs.

    A Spark job costs about 0.1 s on a small machine however few rows it touches, and a
    near-line refresh of a few thousand events is dozens of them. Within these limits a
    stage reads what the batch touches with filtered delta-rs/pyarrow reads, runs the same
    per-row functions (landing-file parsing, the per-user interest fold, topics, scoring)
    on the driver and commits through the same transactions; beyond them, or with the
    delta-spark backend, it runs on Spark.
    """

    enabled: bool = True
    # Ingest: the landing files of one micro-batch (events and reviews) in MiB, as stored.
    max_landing_mb: float = Field(default=16.0, gt=0)
    # Encode, interests, recommend: events and reviews written since the stage's last run.
    max_new_rows: int = Field(default=50_000, gt=0)


class StreamSettings(_Section):
    """``interestlake stream``: the long-running pipeline (docs/operations.md: "Continuous mode")."""

    # Seconds between the starts of two micro-batches (Spark's processing-time trigger): a
    # landing file waits at most this long before its batch starts. Also how often a
    # stream with nothing to ingest looks for a new champion model, a changed conf file
    # and writers waiting for the lake.
    trigger_seconds: float = Field(default=2.0, gt=0, le=3600)


class StatusSettings(_Section):
    """When ``interestlake status`` calls the pipeline unhealthy (exit code 1, for monitors)."""

    # The lists are stale when the last successful recommend run finished longer ago than this
    # (the refresh DAG runs every 5 minutes).
    max_list_age_minutes: float = Field(default=60.0, gt=0)


class Settings(_Section):
    """All settings of one deployment."""

    lake: LakeSettings
    spark: SparkSettings
    encoder: EncoderSettings
    interests: InterestSettings
    recommend: RecommendSettings
    sample: SampleSettings
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)


    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    steer: SteerSettings = Field(default_factory=SteerSettings)
    small_batch: SmallBatchSettings = Field(default_factory=SmallBatchSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    # Where the settings came from, for messages and for jobs started from this process.
    source: str = ""


def _spark_strings(value: Any) -> Any:
    """YAML turns `true` and `8` into bool and int; Spark wants strings."""
    if isinstance(value, Mapping):
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    return value


def _gpu_problem(conf: Mapping[str, str], master: str) -> str | None:
    """What is wrong with the GPU resource properties of one application, if anything."""
    executor, task = conf.get(_GPU_EXECUTOR), conf.get(_GPU_TASK)
    if executor is None and task is None:
        return None
    if executor is None:
        return f"{_GPU_TASK} is set but {_GPU_EXECUTOR} is not: executors would have no GPU to hand out"
    try:
        executor_amount = int(executor)
        task_amount = float(task) if task is not None else 1.0
    except ValueError:
        return f"{_GPU_EXECUTOR} must be a whole number and {_GPU_TASK} a number, got {executor!r} and {task!r}"
    if executor_amount < 1 or task_amount <= 0:
        return f"GPU amounts must be positive, got {_GPU_EXECUTOR}={executor} and {_GPU_TASK}={task}"
    # Spark's own rule: a task takes a whole number of GPUs, or shares one with 1/amount tasks.
    if task_amount > 0.5 and not task_amount.is_integer():
        return f"{_GPU_TASK} must be a whole number or at most 0.5 (a share of one GPU), got {task}"
    if task_amount > executor_amount:
        return f"{_GPU_TASK}={task} is more than an executor has ({_GPU_EXECUTOR}={executor}): no task could start"
    if not conf.get(_GPU_SCRIPT):
        return (
            f"{_GPU_EXECUTOR} needs {_GPU_SCRIPT}, the script that prints the executor's GPU addresses "
            "(e.g. Spark's examples/src/main/scripts/getGpusResources.sh)"
        )
    if master.startswith("k8s://") and not conf.get(_GPU_VENDOR):
        return f"on Kubernetes {_GPU_EXECUTOR} needs {_GPU_VENDOR} (e.g. nvidia.com)"
    return None


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Loads, merges and validates settings.

    Args:
        path: Conf file; defaults to ``$INTERESTLAKE_CONF`` or ``conf/local.yaml``.
        env: Environment for ``INTERESTLAKE__...`` overrides; defaults to ``os.environ``.

    Returns:
        The validated settings.

    Raises:
        SettingsError: If a file is missing or malformed, or any key is unknown or invalid.
    """
    env = os.environ if env is None else env
    conf_path = Path(path or env.get(CONF_ENV_VAR) or DEFAULT_CONF)
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for file in _extends_chain(conf_path):
        body = {k: v for k, v in _read_yaml(file).items() if k != "extends"}
        _merge(merged, body, (), str(file), origins)
    _merge(merged, _env_overrides(env), (), "environment", origins)
    for key_path, value in _env_overrides(env, with_names=True).items():
        origins[key_path] = f"environment variable {value}"
    merged["source"] = str(conf_path.resolve())
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, origins, conf_path)) from None


def _extends_chain(path: Path) -> list[Path]:
    """Files to merge, parent first, following `extends:` links and refusing cycles."""
    chain: list[Path] = []
    current: Path | None = path
    while current is not None:
        if not current.is_file():
            hint = f" (named by extends: in {chain[0]})" if chain else ""
            raise SettingsError(f"{current}: conf file not found{hint}; pass --conf PATH or set {CONF_ENV_VAR}")
        if current.resolve() in [p.resolve() for p in chain]:
            raise SettingsError(f"{current}: extends: forms a cycle through {[str(p) for p in chain]}")
        chain.insert(0, current)
        parent = _read_yaml(current).get("extends")
        if parent is not None and not isinstance(parent, str):
            raise SettingsError(f"{current}: key 'extends' must be a file path, got {parent!r}")
        current = (current.parent / parent) if parent else None
    return chain


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _merge(target: dict, overlay: Mapping, prefix: tuple[str, ...], origin: str, origins: dict) -> None:
    """Deep-merges overlay into target, remembering which file set each key."""
    for key, value in overlay.items():
        key_path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value, key_path, origin, origins)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value
        origins[key_path] = origin
        if isinstance(value, Mapping):
            for sub in _leaf_paths(value, key_path):
                origins[sub] = origin


def _leaf_paths(value: Mapping, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    paths = []
    for key, sub in value.items():
        path = (*prefix, str(key))
        paths.append(path)
        if isinstance(sub, Mapping):
            paths.extend(_leaf_paths(sub, path))
    return paths


def _env_overrides(env: Mapping[str, str], with_names: bool = False) -> dict:
    """Turns INTERESTLAKE__A__B=v into {"a": {"b": v}} (or {("a","b"): name})."""
    nested: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        # Section and key are case-insensitive; deeper keys (Spark properties) keep their case.
        parts = [p.lower() for p in parts[:2]] + parts[2:]
        if any(not p for p in parts):
            raise SettingsError(f"environment variable {name}: empty key part; use {ENV_PREFIX}SECTION__KEY")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SettingsError(f"environment variable {name}: {'.'.join(parts)} overrides a value, not a section")
        node[parts[-1]] = value
        names[tuple(parts)] = name
    return names if with_names else nested


def _describe(exc: ValidationError, origins: dict[tuple[str, ...], str], conf_path: Path) -> str:
    lines = [f"invalid settings ({len(exc.errors())} problem(s)):"]
    for error in exc.errors():
        key_path = tuple(str(p) for p in error["loc"])
        origin = _origin_of(key_path, origins) or str(conf_path)
        key = ".".join(key_path) or "<top level>"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        # A whole section as "got" would bury the message; section-level checks name their keys.
        quiet = error["type"] in ("missing", "extra_forbidden") or isinstance(error.get("input"), Mapping)
        got = "" if quiet else f" (got {error.get('input')!r})"
        lines.append(f"  {origin}: key '{key}': {message}{got}")
    return "\n".join(lines)


def _origin_of(key_path: tuple[str, ...], origins: dict[tuple[str, ...], str]) -> str | None:
    """The file that set this key, or the nearest parent section that was set."""
    for end in range(len(key_path), 0, -1):
        if key_path[:end] in origins:
            return origins[key_path[:end]]
    return None
