"""The encoder in the MLflow model registry: register it, resolve an alias to a version.

``encoder.model_path`` may name a registered model (``models:/interestlake-encoder@champion``
or ``models:/interestlake-encoder/3``). A job resolves it once, when it opens the
pipeline, to a concrete version: the stages load exactly that version (on the
executors, through MLflow), the version becomes the cache key of the embedding
tables (``encoder_version`` = ``interestlake-encoder/3``), and ``pipeline_runs``
records it under ``read_versions["model:interestlake-encoder"]``. An alias moved
while a run is going on does not change what that run uses.

mlflow is imported inside the functions: the driver, the CLI and Airflow import
this module without it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from interestlake.settings import Settings

log = logging.getLogger("interestlake")
REGISTRY_SCHEME = "models:/"
CHAMPION = "champion"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


class RegistryError(RuntimeError):
    """The tracking store or the registered model cannot be used as asked."""


@dataclass(frozen=True)
class ResolvedEncoder:
    """One concrete registered version of the encoder."""

    name: str
    version: int

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``: what the executors load."""
        return f"{REGISTRY_SCHEME}{self.name}/{self.version}"

    @property
    def encoder_version(self) -> str:
        """Cache key of the embedding tables for this version."""
        return f"{self.name}/{self.version}"

    @property
    def record_key(self) -> str:
        """Key under which ``pipeline_runs.read_versions`` records the version."""
        return f"model:{self.name}"


def is_registry_uri(path: str | None) -> bool:
    return bool(path) and str(path).startswith(REGISTRY_SCHEME)


def tracking_uri(settings: Settings) -> str:
    """``mlflow.tracking_uri``, else a SQLite store under the lake root."""
    if settings.mlflow.tracking_uri:
        return settings.mlflow.tracking_uri
    root = settings.lake.root
    if "://" in root:
        raise RegistryError(
            f"lake.root {root!r} is not a local folder, so it cannot hold the default SQLite tracking "
            "store; set mlflow.tracking_uri (e.g. a tracking server's http:// URI)"
        )
    return f"sqlite:///{Path(root) / 'mlflow' / 'mlflow.db'}"


def artifact_location(settings: Settings) -> str:
    """``mlflow.artifact_location``, else ``<lake.root>/mlflow/artifacts``."""
    return settings.mlflow.artifact_location or f"{settings.lake.root.rstrip('/')}/mlflow/artifacts"


def configure(settings: Settings) -> str:
    """Points MLflow's tracking and registry at the configured store; returns its URI."""
    try:
        import mlflow
    except ImportError:
        raise RegistryError("MLflow is not installed: pip install 'interestlake[mlflow]'") from None
    uri = tracking_uri(settings)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(settings: Settings, name: str) -> str:
    """Id of an experiment, created with its artifacts under ``artifact_location`` if missing."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{artifact_location(settings).rstrip('/')}/{name}"
    if "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def parse_uri(uri: str) -> tuple[str, int | None, str | None]:
    """(name, version, alias) of ``models:/name/3`` or ``models:/name@alias``."""
    match = _URI.match(uri)
    if not match:
        raise RegistryError(f"{uri!r} is not a registered model URI; use models:/NAME@ALIAS or models:/NAME/VERSION")
    version = match["version"]
    return match["name"], (int(version) if version else None), match["alias"]


def resolve(settings: Settings, uri: str) -> ResolvedEncoder:
    """The concrete version a registered model URI names now."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    configure(settings)
    name, version, alias = parse_uri(uri)
    try:
        if alias is not None:
            version = int(MlflowClient().get_model_version_by_alias(name, alias).version)
        else:
            MlflowClient().get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(
            f"{uri}: not found in the model registry at {tracking_uri(settings)} ({exc.message}); "
            "register the encoder with `interestlake encoder register`"
        ) from None
    return ResolvedEncoder(name, version)


def register_encoder(settings: Settings, alias: str | None = CHAMPION) -> ResolvedEncoder:
    """Logs the configured local encoder to MLflow, registers it and (optionally) points an alias at it.

    The model logged is the one ``encoder.model_path`` names (the packaged
    all-MiniLM-L6-v2 by default), loaded from disk; nothing is downloaded.

    Returns:
        The new registered version.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from interestlake.models.encoder import load_encoder, resolve_model_path

    if is_registry_uri(settings.encoder.model_path):
        raise RegistryError(f"encoder.model_path {settings.encoder.model_path!r} is already a registered model")
    configure(settings)
    path = resolve_model_path(settings.encoder)
    model = load_encoder(path, "cpu", settings.encoder.max_seq_length)
    name = settings.mlflow.encoder_model
    with mlflow.start_run(experiment_id=experiment_id(settings, "interestlake-encoders"), run_name=f"register {name}"):
        mlflow.log_params({"encoder_version": settings.encoder.version, "model_path": path,
                           "max_seq_length": settings.encoder.max_seq_length})
        info = mlflow.sentence_transformers.log_model(
            model, name="encoder", registered_model_name=name,
            # Given explicitly: inferring them would load the model again in a subprocess.
            pip_requirements=_requirements(), metadata={"encoder_version": settings.encoder.version},
        )
    version = int(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, str(version))
    log.info("registered %s version %d%s", name, version, f" as @{alias}" if alias else "")
    return ResolvedEncoder(name, version)


def champion(settings: Settings, register_if_missing: bool = True) -> ResolvedEncoder:
    """The version ``@champion`` of the encoder model, registering the configured encoder first if none is."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    configure(settings)
    name = settings.mlflow.encoder_model
    try:
        return ResolvedEncoder(name, int(MlflowClient().get_model_version_by_alias(name, CHAMPION).version))
    except MlflowException:
        if not register_if_missing:
            raise RegistryError(f"{name} has no @{CHAMPION} version; run `interestlake encoder register`") from None
    log.info("%s has no @%s yet: registering the configured encoder", name, CHAMPION)
    return register_encoder(settings, CHAMPION)


def resolve_settings(settings: Settings) -> tuple[Settings, ResolvedEncoder | None]:
    """Settings whose encoder is pinned to a concrete registered version, when it names one.

    ``encoder.model_path`` = ``models:/NAME@ALIAS`` becomes ``models:/NAME/VERSION`` and
    ``encoder.version`` becomes ``NAME/VERSION``; other settings come back unchanged.
    """
    if not is_registry_uri(settings.encoder.model_path):
        return settings, None
    resolved = resolve(settings, settings.encoder.model_path)
    log.info("encoder %s resolved to %s", settings.encoder.model_path, resolved.uri)
    return with_encoder(settings, resolved), resolved


def with_encoder(settings: Settings, resolved: ResolvedEncoder) -> Settings:
    """A copy of ``settings`` that uses one concrete registered encoder version."""
    # Validated again, so that a backend or precision suffix joins the new cache key.
    encoder = type(settings.encoder).model_validate(
        {**settings.encoder.model_dump(), "model_path": resolved.uri, "version": resolved.encoder_version}
    )
    return settings.model_copy(update={"encoder": encoder})


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("sentence-transformers", "torch", "transformers"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out
