"""``interestlake status``: the pipeline's health on one screen, read in this process (no Spark).

Everything comes from the lake itself: the Delta logs (versions, commit times), and
``pipeline_runs``, ``quarantine``, ``landing_files``, ``events``/``reviews``,
``user_interests`` and ``recommendations`` read through the in-process SQL engine
(``interestlake.lake.query``). The pipeline is unhealthy (exit code 1) when the last
run of any stage failed, or when no recommend run has succeeded within
``status.max_list_age_minutes``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from interestlake import constants as C
from interestlake.lake.query import LakeSnapshot
from interestlake.settings import Settings

# read_versions keys of the registered models a run used (encoder, interest model): "model:<name>".
_MODEL_KEY = "model:"
_REFLECTED_VIEW = "_interests_behind_lists"


@dataclass
class LakeStatus:
    """What ``interestlake status`` shows; ``problems`` decide the exit code."""

    lake: str
    checked_at: datetime
    tables: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    freshness: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    held_files: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}

    def screen(self) -> str:
        """The plain text screen."""
        lines = [f"Lake {self.lake} at {_when(self.checked_at)}: "
                 + ("healthy" if self.healthy else f"UNHEALTHY ({len(self.problems)} problem(s))")]
        lines += [f"  ! {problem}" for problem in self.problems]
        lines.append("\nTables")
        if not self.tables:
            lines.append("  none yet (run `interestlake ingest` or any stage first)")
        for t in self.tables:
            lines.append(f"  {t['table']:<16} v{t['version']:<5} {t['rows']:>9} rows  last commit {_when(t['last_commit_at'])}")
        lines.append("\nLast run of each stage")
        if not self.stages:
            lines.append("  no run recorded yet")
        for s in self.stages:
            counts = ", ".join(f"{k}={v}" for k, v in (s["counts"] or {}).items())
            lines.append(f"  {s['stage']:<10} {s['status']:<9} started {_when(s['started_at'])}, "
                         f"{_seconds(s['duration_seconds'])}  run {s['run_id']}")
            if counts:
                lines.append(f"             {counts}")
            if s["note"]:
                lines.append(f"             note: {_short(s['note'])}")
        f = self.freshness
        lines.append("\nFreshness")
        lines.append(f"  newest event landed:          {_when(f.get('newest_event_landed'))}")
        lines.append(f"  newest event in the lists:    {_when(f.get('newest_event_in_lists'))}"
                     + (f"  ({_seconds(f['lag_seconds'])} behind)" if f.get("lag_seconds") is not None else ""))
        lines.append(f"  lists last confirmed current: {_when(f.get('lists_confirmed_at'))}"
                     + (f"  ({_seconds(f['list_age_seconds'])} ago; alert after "
                        f"{f['max_list_age_minutes']:g} min)" if f.get("list_age_seconds") is not None else ""))
        lines.append(f"  lists last rewritten:         {_when(f.get('lists_generated_at'))}")
        m = self.models
        lines.append("\nModels")
        lines.append(f"  encoder versions in user_interests: {', '.join(m.get('encoder_versions') or []) or 'none yet'}")
        registered = ", ".join(f"{name} v{version}" for name, version in (m.get("registered") or {}).items())
        lines.append(f"  registered versions the last recommend run used: {registered or 'none (configured encoder, untrained pooling)'}")
        lines.append(f"  interest model of the newest user vectors: {m.get('interest_model') or 'not recorded'}")
        lines.append("\nQuarantine by reason, last ingest runs")
        if not self.quarantine:
            lines.append("  no ingest run recorded yet")
        for q in self.quarantine:
            reasons = ", ".join(f"{reason}={n}" for reason, n in q["reasons"].items()) or "nothing quarantined"
            lines.append(f"  {_when(q['started_at'])}  {q['run_id']}: {reasons}")
        lines.append("\nHeld landing files")
        if not self.held_files:
            lines.append("  none")
        for h in self.held_files:
            lines.append(f"  {h['source']}: {h['reason']} (since {_when(h['recorded_at'])})")
        return "\n".join(lines)


def lake_status(settings: Settings, quarantine_runs: int = 5, now: datetime | None = None) -> LakeStatus:
    """Reads the lake's status.

    Args:
        settings: Loaded settings (``lake`` and ``status``).
        quarantine_runs: How many of the newest ingest runs get their quarantine counts.
        now: The time ages are measured from (default: now).
    """
    # Times are naive UTC throughout, as the SQL engine returns them.
    now = _naive(now or datetime.now(timezone.utc))
    snapshot = LakeSnapshot(settings.lake)
    status = LakeStatus(settings.lake.root, now)
    try:
        available = snapshot.available
        status.tables = _tables(snapshot, available)
        last_recommend = None
        if C.PIPELINE_RUNS in available:
            status.stages = _stages(snapshot)
            last_recommend = _last_success(snapshot, "recommend")
        status.freshness = _freshness(snapshot, available, last_recommend, now, settings.status.max_list_age_minutes)
        status.models = _models(snapshot, available, last_recommend)
        status.quarantine = _quarantine(snapshot, available, quarantine_runs)
        if C.LANDING_FILES in available:
            status.held_files = _held_files(snapshot)
        outdated = [problem for problem in [snapshot.old_layout()] if problem]
    finally:
        snapshot.close()
    status.problems = outdated + _problems(status, settings.status.max_list_age_minutes)
    return status


def _tables(snapshot: LakeSnapshot, available: list[str]) -> list[dict[str, Any]]:
    if not available:
        return []
    counts = _rows(snapshot, " UNION ALL ".join(f"SELECT '{name}' AS t, count(*) AS n FROM {name}" for name in available))
    rows = {row["t"]: row["n"] for row in counts}
    tables = []
    for name in available:
        table = snapshot.table(name)
        commit = table.history(1)[0]
        tables.append({
            "table": name, "version": table.version(), "rows": rows[name],
            "last_commit_at": _naive(datetime.fromtimestamp(commit["timestamp"] / 1000, timezone.utc)),
        })
    return tables


def _stages(snapshot: LakeSnapshot) -> list[dict[str, Any]]:
    runs = _rows(snapshot, f"""
        SELECT stage, run_id, status, started_at, finished_at, counts, read_versions, note
        FROM {C.PIPELINE_RUNS}
        QUALIFY row_number() OVER (PARTITION BY stage ORDER BY started_at DESC, finished_at DESC) = 1
        ORDER BY started_at""")
    for run in runs:
        ended = run["finished_at"]
        run["duration_seconds"] = (ended - run["started_at"]).total_seconds() if ended and run["started_at"] else None
    return runs


def _last_success(snapshot: LakeSnapshot, stage: str) -> dict[str, Any] | None:
    """The newest succeeded run of a stage that read user_interests (one that stopped early read nothing)."""
    runs = _rows(snapshot, f"""
        SELECT run_id, finished_at, read_versions FROM {C.PIPELINE_RUNS}
        WHERE stage = '{stage}' AND status = 'succeeded' AND read_versions['{C.USER_INTERESTS}'] IS NOT NULL
        ORDER BY finished_at DESC LIMIT 1""")
    return runs[0] if runs else None


def _freshness(snapshot, available, last, now, max_age_minutes) -> dict[str, Any]:
    out: dict[str, Any] = {"max_list_age_minutes": max_age_minutes, "newest_event_landed": None,
                           "newest_event_in_lists": None, "lag_seconds": None, "lists_confirmed_at": None,
                           "list_age_seconds": None, "lists_generated_at": None}
    landed = [f"SELECT max({C.COL_TS}) AS ts FROM {name}" for name in (C.EVENTS, C.REVIEWS) if name in available]
    if landed:
        out["newest_event_landed"] = _rows(snapshot, f"SELECT max(ts) AS ts FROM ({' UNION ALL '.join(landed)})")[0]["ts"]
    if C.RECOMMENDATIONS in available:
        out["lists_generated_at"] = _rows(snapshot, f"SELECT max(generated_at) AS t FROM {C.RECOMMENDATIONS}")[0]["t"]
    if last is None:
        return out
    out["lists_confirmed_at"] = last["finished_at"]
    out["list_age_seconds"] = (now - last["finished_at"]).total_seconds()
    # The newest event behind the lists: the newest one folded into the user_interests
    # version that run scored (each user's last_event_at covers events and reviews).
    read = last["read_versions"][C.USER_INTERESTS]
    if snapshot.register_version(C.USER_INTERESTS, read, _REFLECTED_VIEW):
        reflected = _rows(snapshot, f"SELECT max(last_event_at) AS ts FROM {_REFLECTED_VIEW}")[0]["ts"]
        out["newest_event_in_lists"] = reflected
        if reflected is not None and out["newest_event_landed"] is not None:
            out["lag_seconds"] = (out["newest_event_landed"] - reflected).total_seconds()
    return out


def _models(snapshot, available, last) -> dict[str, Any]:
    encoders = []
    if C.USER_INTERESTS in available:
        encoders = [row["v"] for row in _rows(
            snapshot, f"SELECT DISTINCT {C.COL_ENCODER_VERSION} AS v FROM {C.USER_INTERESTS} ORDER BY v")]
    registered = {key[len(_MODEL_KEY):]: version for key, version in ((last or {}).get("read_versions") or {}).items()
                  if key.startswith(_MODEL_KEY)}
    return {"encoder_versions": encoders, "registered": registered,
            "interest_model": _interest_model(snapshot) if C.USER_INTERESTS in available else None}


def _interest_model(snapshot: LakeSnapshot, search: int = 50) -> str | None:
    """The interest model the newest user vectors were computed with, as the interests stage
    recorded it in its commit ("none (untrained pooling)" when it applied none)."""
    for commit in snapshot.table(C.USER_INTERESTS).history(search):
        try:
            meta = json.loads(commit.get("userMetadata") or "{}")
        except ValueError:
            continue
        if isinstance(meta, dict) and meta.get("stage") == "interests" and "model" in meta:
            return meta["model"] or "none (untrained pooling)"
    return None


def _quarantine(snapshot, available, runs: int) -> list[dict[str, Any]]:
    if C.PIPELINE_RUNS not in available:
        return []
    ingests = _rows(snapshot, f"""
        SELECT run_id, started_at FROM {C.PIPELINE_RUNS} WHERE stage = 'ingest'
        ORDER BY started_at DESC LIMIT {int(runs)}""")
    counts: dict[str, dict[str, int]] = {run["run_id"]: {} for run in ingests}
    if ingests and C.QUARANTINE in available:
        ids = ", ".join("'" + run["run_id"].replace("'", "''") + "'" for run in ingests)
        for row in _rows(snapshot, f"""
                SELECT {C.COL_RUN_ID} AS run_id, reason, count(*) AS n FROM {C.QUARANTINE}
                WHERE {C.COL_RUN_ID} IN ({ids}) GROUP BY ALL ORDER BY n DESC, reason"""):
            counts[row["run_id"]][row["reason"]] = row["n"]
    return [{"run_id": run["run_id"], "started_at": run["started_at"], "reasons": counts[run["run_id"]]}
            for run in ingests]


def _held_files(snapshot) -> list[dict[str, Any]]:
    # A file's newest record decides: a held file that changed and was ingested later is not held.
    return _rows(snapshot, f"""
        SELECT source, kind, size, {C.COL_REASON} AS reason, recorded_at FROM (
            SELECT * FROM {C.LANDING_FILES}
            QUALIFY row_number() OVER (PARTITION BY source ORDER BY recorded_at DESC) = 1)
        WHERE status = 'held' ORDER BY source""")


def _problems(status: LakeStatus, max_age_minutes: float) -> list[str]:
    problems = [f"the last {s['stage']} run failed ({s['run_id']}, started {_when(s['started_at'])}): {_short(s['note'] or '')}"
                for s in status.stages if s["status"] != "succeeded"]
    age = status.freshness.get("list_age_seconds")
    if age is None:
        problems.append("no recommend run has succeeded yet: there are no lists to serve")
    elif age > max_age_minutes * 60:
        problems.append(f"the lists were last confirmed current {_seconds(age)} ago "
                        f"(status.max_list_age_minutes = {max_age_minutes:g})")
    return problems


def _rows(snapshot: LakeSnapshot, sql: str) -> list[dict[str, Any]]:
    return snapshot.query(sql).rows


def _naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _when(value: datetime | None) -> str:
    return "never" if value is None else _naive(value).isoformat(sep=" ", timespec="seconds") + " UTC"


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    return str(timedelta(seconds=round(value)))


def _short(text: str, width: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."
