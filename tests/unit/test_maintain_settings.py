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


@pytest.mark.parametrize("argv", [["maintain", "--steps", "compact,defrag"], ["ingest", "--kinds", "items,orders"]])
def test_unknown_steps_and_kinds_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "expected a comma-separated subset of" in capsys.readouterr().err
