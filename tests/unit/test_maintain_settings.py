"""Maintenance settings and arguments are checked before any Spark work."""

import pytest

from interestlake.cli import main
from interestlake.settings import SettingsError

from tests.conftest import make_settings


def test_vacuum_retention_below_one_hour_is_rejected(tmp_path):
    with pytest.raises(SettingsError, match="maintenance.vacuum_retention_hours"):
        make_settings(tmp_path, {"INTERESTLAKE__MAINTENANCE__VACUUM_RETENTION_HOURS": "0"})


def test_maintenance_defaults(tmp_path):
    policy = make_settings(tmp_path).maintenance
    assert (policy.vacuum_retention_hours, policy.quarantine_retention_days, policy.pipeline_runs_retention_days) == (24, 30, 90)


def test_unknown_maintenance_steps_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["maintain", "--steps", "compact,defrag"])
    assert exit_info.value.code == 2
    assert "expected a comma-separated subset of" in capsys.readouterr().err
