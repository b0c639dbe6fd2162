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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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

    def table_uri(self, table: str) -> str:
        """URI of one Delta table under the lake root."""
        return f"{self.root.rstrip('/')}/{table}"

    @property
    def landing_uri(self) -> str:
        """Landing folder with one sub-folder per landing kind."""
        return self.landing or f"{self.root.rstrip('/')}/landing"


class SparkSettings(_Section):
    """How the Spark session is built; ``conf`` is passed to the builder as is."""

    master: str = Field(min_length=1)
    app_name: str = "interestlake"
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        """YAML turns `true` and `8` into bool and int; Spark wants strings."""
        if isinstance(value, Mapping):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value


class EncoderSettings(_Section):
    """The text encoder run inside the Spark UDFs."""

    model_path: str | None = None
    version: str = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(gt=0)
    max_seq_length: int = Field(gt=0, le=8192)


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
    batch_size: int = Field(default=512, gt=0)
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    neighbors: int = Field(default=100, gt=0)
    max_examples_per_user: int = Field(default=64, gt=0)
    max_softmax_items: int = Field(default=4096, gt=0)
    sampled_negatives: int = Field(default=1024, gt=0)
    seed: int = 42


class MaintenanceSettings(_Section):
    """Daily table maintenance (``interestlake maintain``): retention of files and rows."""

    # A vacuum deletes only files removed from their table at least this long ago, so a
    # reader that started within the last hour never loses a file it is reading.
    vacuum_retention_hours: int = Field(default=24, ge=1)
    quarantine_retention_days: int = Field(default=30, gt=0)
    pipeline_runs_retention_days: int = Field(default=90, gt=0)


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
    # Where the settings came from, for messages and for jobs started from this process.
    source: str = ""


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
        got = "" if error["type"] in ("missing", "extra_forbidden") else f" (got {error.get('input')!r})"
        lines.append(f"  {origin}: key '{key}': {message}{got}")
    return "\n".join(lines)


def _origin_of(key_path: tuple[str, ...], origins: dict[tuple[str, ...], str]) -> str | None:
    """The file that set this key, or the nearest parent section that was set."""
    for end in range(len(key_path), 0, -1):
        if key_path[:end] in origins:
            return origins[key_path[:end]]
    return None
