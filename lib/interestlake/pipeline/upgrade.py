"""The ``upgrade`` command: the steps of ``lake.upgrade``, applied in order and recorded in ``pipeline_runs``."""

from __future__ import annotations

from interestlake import constants as C
from interestlake.lake.upgrade import STAGE, Step, apply, plan
from interestlake.pipeline.run import RunContext, StageReport, log


def upgrade(pipeline, run: RunContext, dry_run: bool = False) -> StageReport:
    """Brings the pipeline's lake to this version's layout in place; idempotent and safe to kill.

    ``pipeline_runs`` is brought to the current layout first (outside the record, since
    the record is written there), then every other step runs as one recorded stage
    ``upgrade`` of this run: its note lists the steps, its counts the rows before and after
    each rewritten table. A lake already current is left alone and nothing is recorded.

    Args:
        pipeline: An open pipeline (``open_pipeline(..., ensure_tables=False)``: an old lake
            would be refused).
        run: The run recorded.
        dry_run: Only plan: the report's note lists the steps; nothing is written.
    """
    lake = pipeline.lake
    steps = plan(lake.stored_columns())
    report = _report(run, steps)
    if dry_run or not steps:
        return report
    first = [step for step in steps if step.table == C.PIPELINE_RUNS]
    for step in first:
        _run_step(lake, step, run, report)

    def rest() -> StageReport:
        for step in steps[len(first):]:
            _run_step(lake, step, run, report)
        return report

    return pipeline.recorded(STAGE, run, rest)


def _report(run: RunContext, steps: list[Step]) -> StageReport:
    report = StageReport(STAGE, run.run_id)
    report.note = "; ".join(map(str, steps)) or "the lake is already at this version's layout"
    report.counts["steps"] = len(steps)
    return report


def _run_step(lake, step: Step, run: RunContext, report: StageReport) -> None:
    log.info("upgrade: %s", step)
    commit, counts = apply(lake, step, run.run_id)
    if commit is not None:
        report.commits.append(commit)
    report.counts.update(counts)
