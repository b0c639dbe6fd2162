"""``interestlake upgrade``: a lake written by an earlier table layout brought to the current one, in place.

The plan is derived from the tables as they are, not from a version number: each
declared table (``schemas.TABLES``) is compared with the columns of the Delta table
at its place. Each change is one Delta commit:

- ``create``: a table the layout did not have is created empty.
- ``rewrite``: a table lacking nullable columns is rewritten with every row, the new
  columns set to their default (``COLUMN_DEFAULTS``, else null), in the declared
  column order and schema (one overwrite commit: readers see the old or the new
  table, never a mix).
- ``reset``: a derived table lacking a required column that only its stage can compute
  (``user_interests.recent``, ``decayed_sum``) is emptied under the new schema.
- ``recompute``: before any of these, each derived table already in the declared layout
  gets a commit without rows recording that its inputs are unknown, so the next refresh
  recomputes it in full with this version's code (``DerivedInputs.previous`` is None);
  a derived table that is rewritten or reset says the same in that commit.

The plan after a complete upgrade is empty, so a second run does nothing, and a run
killed half-way leaves each table either upgraded or not: the next run plans and does
what is left (the ``recompute`` commits are made again, which costs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from interestlake import constants as C
from interestlake.lake.schemas import TABLES, table_spec
from interestlake.lake.errors import LakeError

STAGE = "upgrade"
CREATE, REWRITE, RESET, RECOMPUTE = "create", "rewrite", "reset", "recompute"
# Values of added columns for the rows written before they existed.
COLUMN_DEFAULTS = {
    # Texts were never cut before the flag existed.
    C.COL_TRUNCATED: False,
}
# Derived tables and the stage whose commits record what they were computed from.
DERIVED = {C.USER_INTERESTS: "interests", C.RECOMMENDATIONS: "recommend", C.USER_TOPICS: "topics"}
UPGRADE_HINT = "run `interestlake upgrade` to bring it to this version in place (`--dry-run` lists the changes)"


class UpgradeError(LakeError):
    """The lake's layout cannot be upgraded automatically (a column of another type, an unknown column)."""


@dataclass(frozen=True)
class Step:
    """One change of the upgrade: one Delta commit to ``table``."""

    table: str
    action: str
    detail: str

    def __str__(self) -> str:
        return f"{self.table}: {self.action} ({self.detail})"


def layout_differences(existing: dict[str, list[str] | None]) -> list[str]:
    """What differs between stored tables and the declared layout, one phrase per table; empty when current.

    Args:
        existing: Table name -> its stored column names, None for a table that does not exist.
            A lake where no table exists yet is new, not old.
    """
    if all(columns is None for columns in existing.values()):
        return []
    differences = []
    for name, columns in existing.items():
        spec = table_spec(name)
        if columns is None:
            differences.append(f"{name} is missing")
        elif columns != spec.columns:
            missing = [c for c in spec.columns if c not in columns]
            unknown = [c for c in columns if c not in spec.columns]
            parts = [f"lacks {missing}" if missing else "", f"has unknown {unknown}" if unknown else ""]
            differences.append(f"{name} " + (" and ".join(filter(None, parts)) or "has its columns in another order"))
    return differences


def old_layout_message(root: str, stored: dict[str, list[str] | None]) -> str | None:
    """The one line of every command refusing a lake of an earlier layout, naming what differs; None when current.

    Args:
        root: The lake root, named in the message.
        stored: Table name -> its stored column names (``layout_differences``).
    """
    differences = layout_differences(stored)
    if not differences:
        return None
    return (f"the lake at {root} was written by an earlier version of interestlake "
            f"({'; '.join(differences)}); {UPGRADE_HINT}")


def plan(existing: dict[str, list[str] | None]) -> list[Step]:
    """The steps that bring tables with these columns to the declared layout, in the order they run.

    ``pipeline_runs`` comes first (the upgrade is recorded there), then the ``recompute``
    marks of the derived tables, then every other table in declaration order.

    Raises:
        UpgradeError: When a table holds a column this version does not declare (dropping it
            would lose data) or lacks a required column no stage can recompute.
    """
    if not layout_differences(existing):
        return []
    steps: list[Step] = []
    for name in sorted(existing, key=lambda n: (n != C.PIPELINE_RUNS, list(TABLES).index(n))):
        spec, columns = table_spec(name), existing[name]
        if columns is None:
            steps.append(Step(name, CREATE, "a new table, empty"))
            continue
        if columns == spec.columns:
            continue
        unknown = [c for c in columns if c not in spec.columns]
        if unknown:
            raise UpgradeError(
                f"table {name} has column(s) {unknown} this version of interestlake does not know: it was written "
                "by a newer version, or by hand; upgrading would drop them"
            )
        missing = [c for c in spec.columns if c not in columns]
        required = [c for c in missing if not spec.schema[c].nullable]
        if required and name not in DERIVED:
            raise UpgradeError(f"table {name} lacks required column(s) {required} that have no default")
        if required:
            steps.append(Step(name, RESET, f"lacks {missing}, which only its stage computes: emptied, "
                                           "the next refresh recomputes it"))
        else:
            defaults = ", ".join(f"{c}={COLUMN_DEFAULTS.get(c)}" for c in missing) or "none"
            steps.append(Step(name, REWRITE, f"every row kept; new columns {defaults}" if missing
                              else "every row kept; columns in the declared order"))
    # A derived table that is rewritten or reset carries the same mark in that commit.
    marks = [Step(name, RECOMPUTE, "the next refresh recomputes it in full")
             for name in DERIVED if existing.get(name) == table_spec(name).columns]
    first = 1 if steps and steps[0].table == C.PIPELINE_RUNS else 0
    return steps[:first] + marks + steps[first:]


def apply(lake, step: Step, run_id: str) -> tuple[object | None, dict[str, int]]:
    """Makes one step's commit.

    Returns:
        The commit (None for a created table) and counts: rows before and after for a
        rewritten or reset table.
    """
    metadata = {"stage": STAGE, "run_id": run_id, "step": step.action}
    if step.table in DERIVED:
        # Marked as the stage's own commit, with no inputs: its next run recomputes in full.
        metadata = {**metadata, "stage": DERIVED[step.table], "inputs": None, "upgraded_by": run_id}
    if step.action == CREATE:
        lake.ensure_tables([step.table])
        return None, {}
    if step.action == RECOMPUTE:
        return lake.record_progress(step.table, metadata=metadata), {}
    from pyspark.sql import functions as F

    spec = table_spec(step.table)
    if step.action == RESET:
        rows = lake.spark.createDataFrame([], spec.schema)
    else:
        rows = lake.read_stored(step.table)
        for column, value in COLUMN_DEFAULTS.items():
            if column in spec.columns:
                rows = rows.withColumn(column, F.coalesce(F.col(column), F.lit(value)))
    before = lake.stored_rows(step.table)
    commit = lake.replace_layout(step.table, rows, metadata=metadata)
    return commit, {f"{step.table}_rows_before": before, f"{step.table}_rows_after": commit.rows}
