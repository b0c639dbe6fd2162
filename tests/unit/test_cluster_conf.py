"""The cluster conf files load and validate, every key in them is explained, and the
checks that would otherwise fail only on the cluster (GPU amounts, S3 commit options)
fail at load time, naming the key."""

import re

import pytest

from interestlake.settings import SettingsError, load_settings

from tests.conftest import REPO

CLUSTER_CONFS = ["cluster.yaml", "cluster-k8s.yaml", "standalone.yaml"]
_KEY_LINE = re.compile(r"^(\s*)([^#\s][^:]*):(\s|$)")


@pytest.mark.parametrize("name", CLUSTER_CONFS)
def test_cluster_conf_loads_and_validates(name):
    load_settings(REPO / "conf" / name, env={})


def test_yarn_conf_gives_gpus_to_the_encode_stage_only():
    settings = load_settings(REPO / "conf" / "cluster.yaml", env={})
    assert settings.spark.master == "yarn"
    assert settings.lake.root.startswith("s3://") and settings.lake.landing.startswith("s3://")
    assert settings.lake.storage_options["aws_conditional_put"] == "etag"
    encode = settings.spark.conf_for(["encode"])
    assert encode["spark.executor.resource.gpu.amount"] == "1"
    assert encode["spark.task.resource.gpu.amount"] == "0.25"
    assert encode["spark.executor.resource.gpu.discoveryScript"].endswith("getGpusResources.sh")
    for job in ("ingest", "interests", "recommend", "maintain"):
        assert "spark.executor.resource.gpu.amount" not in settings.spark.conf_for([job])
    # A refresh runs every stage in one application: it gets encode's GPUs too.
    assert "spark.executor.resource.gpu.amount" in settings.spark.conf_for(["ingest", "encode", "interests", "recommend"])
    # The packed venv reaches the executors, and their interpreter is in it.
    assert settings.spark.conf["spark.archives"].endswith("#environment")
    assert settings.spark.conf["spark.pyspark.python"] == "./environment/bin/python"
    assert settings.mlflow.tracking_uri


def test_kubernetes_conf_extends_the_yarn_one():
    settings = load_settings(REPO / "conf" / "cluster-k8s.yaml", env={})
    assert settings.spark.master.startswith("k8s://")
    assert settings.spark.conf["spark.kubernetes.container.image"]
    encode = settings.spark.conf_for(["encode"])
    assert encode["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    assert encode["spark.executor.resource.gpu.amount"] == "1"
    assert settings.lake.root == load_settings(REPO / "conf" / "cluster.yaml", env={}).lake.root


@pytest.mark.parametrize("name", CLUSTER_CONFS)
def test_every_key_is_explained(name):
    """Each key has a comment of its own: on the lines right above it, or after it."""
    lines = (REPO / "conf" / name).read_text(encoding="utf-8").splitlines()
    unexplained = []
    for number, line in enumerate(lines):
        match = _KEY_LINE.match(line)
        if not match:
            continue
        above = lines[number - 1].strip() if number else ""
        if " #" not in line and not above.startswith("#"):
            unexplained.append(f"{name}:{number + 1}: {line.strip()}")
    assert unexplained == []


@pytest.mark.parametrize(
    ("stage_conf", "message"),
    [
        ({"spark.task.resource.gpu.amount": "1"}, "spark.executor.resource.gpu.amount is not"),
        ({"spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "0.75"}, "at most 0.5"),
        ({"spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "2",
          "spark.executor.resource.gpu.discoveryScript": "/x.sh"}, "more than an executor has"),
        ({"spark.executor.resource.gpu.amount": "one"}, "whole number"),
        ({"spark.executor.resource.gpu.amount": "1"}, "needs spark.executor.resource.gpu.discoveryScript"),
    ],
)
def test_gpu_amounts_are_checked_when_the_conf_loads(tmp_path, stage_conf, message):
    conf = tmp_path / "gpu.yaml"
    lines = "".join(f"      {key}: \"{value}\"\n" for key, value in stage_conf.items())
    conf.write_text(f"extends: {REPO / 'conf' / 'local.yaml'}\nspark:\n  stage_conf:\n    encode:\n{lines}")
    with pytest.raises(SettingsError) as error:
        load_settings(conf, env={})
    assert message in str(error.value) and "spark.stage_conf.encode" in str(error.value)
    assert str(conf) in str(error.value)


def test_kubernetes_gpus_need_a_vendor():
    # cluster.yaml (YARN) names no vendor: pointed at Kubernetes, it must say which GPUs.
    env = {"INTERESTLAKE__SPARK__MASTER": "k8s://https://api.example:6443"}
    with pytest.raises(SettingsError, match="needs spark.executor.resource.gpu.vendor"):
        load_settings(REPO / "conf" / "cluster.yaml", env=env)


def test_stage_conf_names_only_known_jobs():
    with pytest.raises(SettingsError, match="spark.stage_conf.encdoe"):
        load_settings(REPO / "conf" / "local.yaml", env={"INTERESTLAKE__SPARK__STAGE_CONF__encdoe__spark.x": "1"})


def test_the_removed_dynamodb_lock_is_refused():
    env = {"INTERESTLAKE__LAKE__STORAGE_OPTIONS__AWS_S3_LOCKING_PROVIDER": "dynamodb"}
    with pytest.raises(SettingsError) as error:
        load_settings(REPO / "conf" / "cluster.yaml", env=env)
    message = str(error.value)
    assert "lake.storage_options" in message and "conditional writes" in message
    assert "environment" in message
