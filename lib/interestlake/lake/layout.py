"""Whether a lake is at this version's table layout, told without importing Spark.

The declared layout is ``lake/schemas.py`` (Spark types). Readers that never import
Spark (``interestlake sql`` with DuckDB, ``interestlake status``) compare the columns
stored in the Delta logs with a fingerprint of that layout instead: equal means
current, and only a lake whose columns differ pays for importing the schemas to say
what differs (``interestlake.lake.upgrade.old_layout_message``). A unit test
(tests/unit/test_query_engine.py) fails, with the new value, when the schemas change
and ``LAYOUT_FINGERPRINT`` was not updated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from interestlake import constants as C

# layout_fingerprint() of the tables declared in lake/schemas.py.
LAYOUT_FINGERPRINT = "e100cbfae96af613"


def layout_fingerprint(columns: Mapping[str, Sequence[str] | None]) -> str:
    """A short digest of each lake table's column names in order (None: the table does not exist).

    Args:
        columns: Table name -> its column names; tables of ``constants.LAKE_TABLES`` it lacks
            count as missing.
    """
    listed = [[name, list(columns[name]) if columns.get(name) is not None else None] for name in C.LAKE_TABLES]
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]


def maybe_outdated(stored: Mapping[str, Sequence[str] | None]) -> bool:
    """False when the stored columns are this version's layout, or when no table exists yet (a new lake).

    True means only that the columns differ from the fingerprint: ask
    ``upgrade.old_layout_message`` what differs.
    """
    if all(columns is None for columns in stored.values()):
        return False
    return layout_fingerprint(stored) != LAYOUT_FINGERPRINT
