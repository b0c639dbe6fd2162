"""The learned interest model in the MLflow model registry: log a version, promote it, resolve the champion.

Each training run is one MLflow run (experiment ``interestlake-training``) with
the training parameters, the Delta versions of the input tables
(``data_version.<table>``) and the validation metrics; its model (the two files
of ``InterestModel.save``) is logged as a pyfunc model and registered as a new
version of ``model.name`` (``interestlake-interest-model``), tagged with its
``validation_ndcg``.

``promote`` points the alias ``champion`` at a version only when it beats the
current champion's validation NDCG (or when there is none). Commands resolve
``model.uri`` once, when they start (``resolve_model``): by default to the
champion when one exists, else to no model (the untrained pooling); the
version's files are downloaded to ``<lake.root>/_models/<name>/<version>`` once.

mlflow is imported inside the functions.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interestlake.models.interest_model import MODEL_FILE, NO_MODEL
from interestlake.models.registry import (
    CHAMPION, RegistryError, configure, experiment_id, is_registry_uri, parse_uri, tracking_uri,
)
from interestlake.settings import Settings

log = logging.getLogger("interestlake")
EXPERIMENT = "interestlake-training"
ARTIFACT = "interest_model"
METRIC = "validation_ndcg"


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` decided."""

    name: str
    version: int
    promoted: bool
    validation_ndcg: float
    champion_version: int | None
    champion_ndcg: float | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def log_model(settings: Settings, result, data_versions: dict[str, int]) -> int:
    """Logs a trained model as a new registered version of ``model.name``; returns the version.

    Args:
        settings: Loaded settings (MLflow store, model name).
        result: ``interestlake.models.training.TrainResult``.
        data_versions: Delta versions of the tables it was trained on.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    configure(settings)
    name = settings.model.name

    class InterestModelPyfunc(mlflow.pyfunc.PythonModel):
        """Loads the saved model; ``predict`` gives the item side ``[v_j, Q_j, b_j]`` of (item_id, embedding) rows
        (``InterestModel.item_vectors``)."""

        def load_context(self, context):
            from interestlake.models.interest_model import InterestModel

            self.model = InterestModel.load(Path(context.artifacts["model"]))

        def predict(self, context, model_input):
            import numpy as np

            return self.model.item_vectors(list(model_input["item_id"]), np.stack(model_input["embedding"].to_numpy()))

    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(
        experiment_id=experiment_id(settings, EXPERIMENT), run_name=f"train {name}"
    ):
        mlflow.log_params({key: value for key, value in result.params.items()})
        mlflow.log_params({f"data_version.{table}": version for table, version in data_versions.items()})
        mlflow.log_params({key: result.model.meta[key] for key in ("knn_weight", "knn_decay", "pop_weight", "history_weight", "trained_epochs")})
        mlflow.log_param("encoder_version", result.model.meta.get("encoder_version"))
        mlflow.log_metrics(result.metrics)
        folder = result.model.save(Path(tmp) / ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT, python_model=InterestModelPyfunc(), artifacts={"model": str(folder)},
            registered_model_name=name, pip_requirements=["numpy"],
        )
    version = int(info.registered_model_version)
    MlflowClient().set_model_version_tag(name, str(version), METRIC, str(result.metrics[METRIC]))
    log.info("registered %s version %d (validation NDCG %.4f)", name, version, result.metrics[METRIC])
    return version


def promote(settings: Settings, version: int | None = None) -> Promotion:
    """Makes ``version`` (default: the newest) ``@champion`` if it beats the champion's validation NDCG.

    A model no better than the champion is refused: the alias stays where it is.

    Raises:
        RegistryError: No registered version (or not the one named).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    configure(settings)
    client = MlflowClient()
    name = settings.model.name
    try:
        if version is None:
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise RegistryError(f"{name} has no registered version; run `interestlake train` first")
            version = max(int(v.version) for v in versions)
        candidate = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} version {version}: not found at {tracking_uri(settings)} ({exc.message})") from None
    score = _metric(candidate)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    if current is not None and int(current.version) == version:
        return Promotion(name, version, False, score, version, score, "already the champion")
    best = _metric(current) if current is not None else None
    if current is not None and not score > best:
        return Promotion(name, version, False, score, int(current.version), best,
                         f"validation NDCG {score:.4f} does not beat the champion's {best:.4f}")
    client.set_registered_model_alias(name, CHAMPION, str(version))
    reason = "no champion yet" if current is None else f"validation NDCG {score:.4f} beats {best:.4f}"
    log.info("promoted %s version %d to @%s: %s", name, version, CHAMPION, reason)
    return Promotion(name, version, True, score, int(current.version) if current else None, best, reason)


def resolve_model(settings: Settings) -> tuple[Settings, int | None]:
    """Settings whose ``model.uri`` is a local folder of one concrete version (or ``none``).

    ``model.uri`` unset: the champion when the registry has one, else no model
    (the untrained pooling); a registry URI: that version (an error when it does
    not exist); a local folder: used as it is.

    Returns:
        (the settings the stages get, the registered version applied or None).
    """
    conf = settings.model
    if conf.uri == NO_MODEL:
        return _with_model(settings, NO_MODEL, None), None
    if conf.uri and not is_registry_uri(conf.uri):
        return _with_model(settings, conf.uri, conf.version or f"path:{conf.uri}"), None
    if conf.uri is None and not _store_exists(settings):
        return _with_model(settings, NO_MODEL, None), None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    configure(settings)
    client = MlflowClient()
    name, version, alias = parse_uri(conf.uri) if conf.uri else (conf.name, None, CHAMPION)
    try:
        if version is None:
            version = int(client.get_model_version_by_alias(name, alias).version)
        else:
            client.get_model_version(name, str(version))
    except MlflowException as exc:
        if conf.uri is None:
            return _with_model(settings, NO_MODEL, None), None
        raise RegistryError(f"{conf.uri}: not found in the model registry at {tracking_uri(settings)} ({exc.message})") from None
    folder = _download(settings, name, version)
    log.info("interest model %s resolved to version %d", conf.uri or f"{name}@{CHAMPION}", version)
    return _with_model(settings, str(folder), f"{name}/{version}"), version


def _with_model(settings: Settings, uri: str, version: str | None) -> Settings:
    return settings.model_copy(update={"model": settings.model.model_copy(update={"uri": uri, "version": version})})


def _metric(version) -> float:
    try:
        return float(version.tags[METRIC])
    except (KeyError, TypeError, ValueError):
        raise RegistryError(f"{version.name} version {version.version} has no {METRIC} tag; it was not logged by `interestlake train`") from None


def _store_exists(settings: Settings) -> bool:
    """False for a default SQLite store that was never created (no model can be registered there)."""
    if not settings.mlflow.tracking_uri and "://" in settings.lake.root:
        return False  # no store configured: tracking_uri() would refuse
    uri = tracking_uri(settings)
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists()


def _download(settings: Settings, name: str, version: int) -> Path:
    """The version's model folder, downloaded once under the lake (else a temporary folder)."""
    import mlflow

    root = settings.lake.root
    cache = (Path(root) if "://" not in root else Path(tempfile.gettempdir()) / "interestlake") / "_models" / name / str(version)
    if (cache / MODEL_FILE).exists():
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp))
        found = next(local.rglob(MODEL_FILE), None)
        if found is None:
            raise RegistryError(f"{name} version {version} holds no {MODEL_FILE}")
        staging = cache.with_name(cache.name + ".partial")
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(found.parent, staging)
        staging.rename(cache)
    return cache
