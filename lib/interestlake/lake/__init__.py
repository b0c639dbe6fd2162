"""The lake layer: the Delta tables of one lake root, and everything that reads or writes them.

``open_lake`` is the entry point: ``from interestlake.lake import open_lake`` and
``from interestlake.lake.tables import open_lake`` give the same function, and so for the
other names of ``lake/tables.py`` (``LakeTables``, ``Txn``, ``CommitResult``, the errors).
They are loaded when first asked for, not when the package is imported: the light modules
of the package (``lake/lock.py`` for the Airflow DAGs, ``lake/query.py`` and
``lake/status.py`` for ``sql`` and ``status``) must not bring in PySpark. The module map
is in docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

# The public names of lake/tables.py (its __all__; a unit test keeps the two lists equal).
_FROM_TABLES = (
    "CommitResult", "DeltaRsTables", "DeltaSparkTables", "LakeConflictError", "LakeError", "LakeHistoryGone",
    "LakeTables", "Txn", "delta_spark_available", "open_lake", "storage_failure",
)

__all__ = list(_FROM_TABLES)


def __getattr__(name: str) -> Any:
    if name in _FROM_TABLES:
        from interestlake.lake import tables

        return getattr(tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
