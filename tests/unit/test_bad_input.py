"""Bad input without Spark: file-level problems, new row rules, pseudonyms, safe settings and models."""

import gzip
import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from interestlake.datasets import validation as V
from interestlake.datasets.checks import check_landing, mask_texts
from interestlake.datasets.landing import check_file, read_records

EVENT = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "2026-10-01T12:00:00Z"}
WRITTEN = datetime(2026, 10, 2, tzinfo=timezone.utc)


def validate(kind, record, written_at=WRITTEN):
    return V.validate_record(kind, record, written_at)


def test_timestamps_more_than_a_day_after_the_file_are_rejected():
    assert validate("events", {**EVENT, "ts": "2026-10-02T23:00:00Z"})["ts"] == datetime(2026, 10, 2, 23)
    late = validate("events", {**EVENT, "ts": "2026-10-03T00:00:01Z"})
    assert late.reason == V.INVALID_TIMESTAMP and "more than a day" in late.detail
    # Without a file time the reference is now.
    future = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()
    assert V.validate_record("events", {**EVENT, "ts": future}).reason == V.INVALID_TIMESTAMP


def test_control_characters_reject_ids_and_are_removed_from_texts():
    assert validate("events", {**EVENT, "user_id": "u\x001"}).reason == V.INVALID_ID
    assert validate("events", {**EVENT, "event_id": "e\n1"}).reason == V.INVALID_ID
    row = validate("events", {**EVENT, "event_type": "search", "item_id": None, "text": "pour\x07 over\x00 kettle\t"})
    assert row["text"] == "pour over kettle\t" and row["truncated"] is False


def test_long_texts_are_cut_and_flagged_empty_ones_are_null():
    row = validate("reviews", {"review_id": "r1", "user_id": "u1", "item_id": "i1", "rating": 4,
                                "text": "é" * (V.MAX_TEXT_CHARS + 10), "ts": 1790000000})
    assert len(row["text"]) == V.MAX_TEXT_CHARS and row["truncated"] is True
    empty = validate("reviews", {"review_id": "r2", "user_id": "u1", "item_id": "i1", "rating": 4, "text": "  ",
                                 "ts": 1790000000})
    assert empty["text"] is None and empty["truncated"] is False
    item = validate("items", {"item_id": "i1", "title": "Kettle", "description": "x" * 1_000_000})
    assert len(item["description"]) == V.MAX_TEXT_CHARS and item["truncated"] is True
    assert validate("items", {"item_id": "i1", "title": "\x00\x01"}).reason == V.MISSING_FIELD


def test_html_and_mixed_scripts_are_kept_as_data():
    for text in ["<script>alert('x')</script><b>kettle</b>", "咖啡 ☕ مرحبا بالعالم 🎸 עברית"]:
        row = validate("events", {**EVENT, "event_type": "search", "item_id": None, "text": text})
        assert row["text"] == text


def test_rejection_details_do_not_copy_long_values():
    result = validate("events", {**EVENT, "event_type": "rate", "rating": "my very private opinion " * 10})
    assert result.reason == V.INVALID_RATING and result.detail.count("private") <= 2 and len(result.detail) < 120


def test_file_level_problems_are_one_row_zero_and_nothing_else(tmp_path):
    good = (json.dumps(EVENT) + "\n").encode()
    cases = {
        "cut.jsonl": (good + b'{"event_id": "e2", "user', V.TRUNCATED_FILE),
        "cut.jsonl.gz": (gzip.compress(good * 50)[:-12], V.TRUNCATED_FILE),
        "corrupt.jsonl.gz": (b"\x1f\x8b\x08\x00" + bytes(range(256)) * 2, V.UNREADABLE_FILE),
        "empty.jsonl": (b"", V.EMPTY_FILE),
        "blank.jsonl": (b"\n  \n", V.EMPTY_FILE),
        "empty.json": (b"[]", V.EMPTY_FILE),
        "header.csv": (b"event_id,user_id,item_id,event_type,ts\n", V.EMPTY_FILE),
        "cut.csv": (b"event_id,user_id,item_id,event_type,ts\ne1,u1,i1,view,2026-10-01\ne2,u1", V.TRUNCATED_FILE),
        "cut.json": (b'[{"event_id": "e1"}, {"event_id"', V.TRUNCATED_FILE),
        "picture.jsonl": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), V.UNKNOWN_FORMAT),
        "notes.xml": (b"<events/>", V.UNKNOWN_FORMAT),
        "half.parquet": (b"PAR1" + bytes(range(40)), V.UNREADABLE_FILE),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        [record] = list(read_records(str(tmp_path / name)))
        assert (name, record.row_no, record.rejection.reason) == (name, 0, expected)
    # A complete last line without a final newline is fine.
    (tmp_path / "no-newline.jsonl").write_bytes(good + json.dumps(EVENT).encode())
    assert [r.row_no for r in read_records(str(tmp_path / "no-newline.jsonl"))] == [1, 2]


def test_check_file_turns_any_parser_failure_into_an_unreadable_row(tmp_path, monkeypatch):
    import interestlake.datasets.landing as landing

    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(EVENT) + "\n")

    def explode(*args):
        raise RuntimeError("the secret text of a review")

    monkeypatch.setattr(landing, "_json_line", explode)
    digest, [row] = check_file("events", str(path))
    assert row.row_no == 0 and row.result.reason == V.UNREADABLE_FILE
    assert "secret" not in row.result.detail and len(digest) == 64


def test_validate_counts_reasons_and_duplicates_and_masks_texts(tmp_path):
    events = tmp_path / "landing" / "events"
    events.mkdir(parents=True)
    rows = [EVENT, {**EVENT, "user_id": " "}, EVENT, {**EVENT, "event_id": "e2", "event_type": "search",
                                                       "item_id": None, "text": "my private query"}]
    (events / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"text": "private too\n')
    (events / "b.xml").write_text("<x/>")
    check = check_landing(str(tmp_path / "landing"))
    assert dict(check.counts["events"]) == {"accepted": 2, "duplicate": 1, "empty_id": 1, "invalid_json": 1,
                                            "unknown_format": 1}
    assert check.files["events"] == 2
    out = check.summary() + json.dumps(check.to_json())
    assert "private" not in out and "empty_id" in out
    assert check_landing(str(events / "a.jsonl")).counts["events"]["accepted"] == 2
    assert mask_texts('{"text": "hello", "user_id": "u1"}') == '{"text": "<5 characters>", "user_id": "u1"}'
    with pytest.raises(ValueError, match="no such file"):
        check_landing(str(tmp_path / "missing"))


def test_pseudonyms_are_stable_keyed_and_the_key_stays_out_of_settings(tmp_path):
    from interestlake.privacy import Pseudonymizer, pseudonymizer
    from interestlake.settings import SettingsError

    from tests.conftest import make_settings

    settings = make_settings(tmp_path, {"INTERESTLAKE__PRIVACY__PSEUDONYMIZE_USER_IDS": "true"})
    one = pseudonymizer(settings, env={"INTERESTLAKE_PSEUDONYM_KEY": "k" * 32})
    assert one("alice") == one("alice") == Pseudonymizer(b"k" * 32)("alice")
    assert one("alice").startswith("p_") and one("alice") != one("bob")
    assert Pseudonymizer(b"j" * 32)("alice") != one("alice")
    assert "k" * 32 not in repr(one)
    with pytest.raises(SettingsError, match="INTERESTLAKE_PSEUDONYM_KEY is not set"):
        pseudonymizer(settings, env={})
    with pytest.raises(SettingsError, match="shorter than 16 bytes"):
        pseudonymizer(settings, env={"INTERESTLAKE_PSEUDONYM_KEY": "short"})
    assert pseudonymizer(make_settings(tmp_path), env={}) is None
    # A key written into a conf file is an unknown key, and the message does not repeat it.
    conf = tmp_path / "leaky.yaml"
    conf.write_text("extends: {}\nprivacy:\n  key: hunter2hunter2hunter2\n".format(
        os.path.join(os.path.dirname(__file__), "..", "..", "conf", "base.yaml")))
    from interestlake.settings import load_settings

    with pytest.raises(SettingsError, match="privacy.key': unknown key") as error:
        load_settings(conf, env={})
    assert "hunter2" not in str(error.value)


def test_settings_files_cannot_construct_objects(tmp_path):
    from interestlake.settings import SettingsError, load_settings

    conf = tmp_path / "evil.yaml"
    conf.write_text("lake: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(conf, env={})
    assert not (tmp_path / "pwned").exists()


def test_models_load_only_from_allowed_roots_and_safetensors(tmp_path, monkeypatch):
    from interestlake.models.encoder import EncoderError, resolve_model_path

    from tests.conftest import make_settings

    encoder = make_settings(tmp_path).encoder
    model = tmp_path / "models" / "mine"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    outside = encoder.model_copy(update={"model_path": str(model)})
    with pytest.raises(EncoderError, match="outside encoder.allowed_roots"):
        resolve_model_path(outside)
    sneaky = encoder.model_copy(update={"model_path": str(tmp_path / "models" / ".." / "elsewhere"),
                                        "allowed_roots": [str(tmp_path / "models")]})
    with pytest.raises(EncoderError, match="outside encoder.allowed_roots"):
        resolve_model_path(sneaky)
    allowed = encoder.model_copy(update={"model_path": str(model), "allowed_roots": [str(tmp_path / "models")]})
    assert resolve_model_path(allowed) == str(model)
    (model / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(EncoderError, match="pickle-based files"):
        resolve_model_path(allowed)
    (model / "pytorch_model.bin").unlink()
    (model / "model.safetensors").unlink()
    with pytest.raises(EncoderError, match="no \\*.safetensors"):
        resolve_model_path(allowed)
    # The packaged default needs no root.
    assert resolve_model_path(encoder).endswith("model")
