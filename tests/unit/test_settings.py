"""Settings: merging, environment overrides and error messages that name key and file."""

import pytest

from interestlake.settings import SettingsError, load_settings

from tests.conftest import REPO


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_local_conf_extends_base_and_resolves_lake_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(REPO / "conf" / "local.yaml", env={})
    assert settings.spark.master == "local[*]"
    assert settings.lake.backend == "delta-rs"
    # Relative roots resolve against the working directory, once, at load time.
    assert settings.lake.root == str(tmp_path / "lakehouse")
    assert settings.lake.landing_uri == str(tmp_path / "lakehouse" / "landing")
    assert settings.recommend.k == 10
    assert settings.spark.conf["spark.sql.shuffle.partitions"] == "8"


def test_environment_overrides_any_key_with_yaml_values():
    settings = load_settings(
        REPO / "conf" / "local.yaml",
        env={
            "INTERESTLAKE__RECOMMEND__K": "25",
            "INTERESTLAKE__spark__master": "local[3]",
            "INTERESTLAKE__RECOMMEND__EXCLUDE_EVENT_TYPES": "[purchase, cart]",
            "INTERESTLAKE__SPARK__CONF__spark.sql.adaptive.enabled": "false",
            "UNRELATED": "x",
        },
    )
    assert settings.recommend.k == 25
    assert settings.spark.master == "local[3]"
    assert settings.recommend.exclude_event_types == ["purchase", "cart"]
    assert settings.spark.conf["spark.sql.adaptive.enabled"] == "false"


def test_unknown_key_names_key_and_file(tmp_path):
    conf = write(tmp_path / "bad.yaml", f"extends: {REPO / 'conf' / 'base.yaml'}\nrecommend:\n  kk: 3\n")
    with pytest.raises(SettingsError) as error:
        load_settings(conf, env={})
    message = str(error.value)
    assert "recommend.kk" in message and "unknown key" in message
    assert str(conf) in message


def test_invalid_value_names_key_file_and_value(tmp_path):
    conf = write(tmp_path / "bad.yaml", f"extends: {REPO / 'conf' / 'base.yaml'}\nencoder:\n  batch_size: -4\n")
    with pytest.raises(SettingsError) as error:
        load_settings(conf, env={})
    message = str(error.value)
    assert "encoder.batch_size" in message and str(conf) in message and "-4" in message
    # Only the offending key is reported: the inherited ones are valid.
    assert message.count("key '") == 1


def test_bad_value_from_environment_names_the_variable():
    with pytest.raises(SettingsError) as error:
        load_settings(REPO / "conf" / "local.yaml", env={"INTERESTLAKE__LAKE__BACKEND": "parquet"})
    assert "INTERESTLAKE__LAKE__BACKEND" in str(error.value) and "lake.backend" in str(error.value)


def test_all_problems_reported_at_once(tmp_path):
    conf = write(
        tmp_path / "bad.yaml",
        f"extends: {REPO / 'conf' / 'base.yaml'}\nrecommend:\n  k: 0\ninterests:\n  event_weights:\n    teleport: 1\n",
    )
    with pytest.raises(SettingsError) as error:
        load_settings(conf, env={})
    message = str(error.value)
    assert "recommend.k" in message and "interests.event_weights" in message and "unknown event type" in message


def test_missing_file_and_missing_parent_are_clear(tmp_path):
    with pytest.raises(SettingsError, match="conf file not found"):
        load_settings(tmp_path / "nope.yaml", env={})
    child = write(tmp_path / "child.yaml", "extends: parent.yaml\n")
    with pytest.raises(SettingsError, match="parent.yaml.*named by extends"):
        load_settings(child, env={})


def test_malformed_yaml_and_extends_cycle(tmp_path):
    broken = write(tmp_path / "broken.yaml", "lake: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(broken, env={})
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(SettingsError, match="cycle"):
        load_settings(tmp_path / "a.yaml", env={})


def test_conf_path_from_environment_variable(tmp_path):
    conf = write(tmp_path / "mine.yaml", f"extends: {REPO / 'conf' / 'local.yaml'}\nrecommend:\n  k: 7\n")
    assert load_settings(env={"INTERESTLAKE_CONF": str(conf)}).recommend.k == 7


@pytest.mark.parametrize(
    ("overrides", "version"),
    [
        ({}, "all-MiniLM-L6-v2"),
        ({"INTERESTLAKE__ENCODER__BACKEND": "onnx"}, "all-MiniLM-L6-v2"),
        ({"INTERESTLAKE__ENCODER__BACKEND": "onnx-int8"}, "all-MiniLM-L6-v2+onnx-int8"),
        ({"INTERESTLAKE__ENCODER__PRECISION": "bf16"}, "all-MiniLM-L6-v2+bf16"),
    ],
)
def test_encoder_variants_whose_vectors_differ_get_their_own_cache_key(overrides, version):
    assert load_settings(REPO / "conf" / "local.yaml", env=overrides).encoder.version == version


def test_half_precision_is_for_the_torch_backend_only():
    with pytest.raises(SettingsError, match="precision applies to the torch backend"):
        load_settings(REPO / "conf" / "local.yaml",
                      env={"INTERESTLAKE__ENCODER__BACKEND": "onnx", "INTERESTLAKE__ENCODER__PRECISION": "fp16"})


def test_stream_trigger_defaults_to_two_seconds_and_must_be_positive():
    conf = REPO / "conf" / "local.yaml"
    assert load_settings(conf, env={}).stream.trigger_seconds == 2
    with pytest.raises(SettingsError, match="INTERESTLAKE__STREAM__TRIGGER_SECONDS"):
        load_settings(conf, env={"INTERESTLAKE__STREAM__TRIGGER_SECONDS": "0"})
