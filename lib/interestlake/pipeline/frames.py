"""The two forms a stage's rows take: a Spark DataFrame, or, for a small batch, an Arrow table on the driver.

Stages write their per-row work once, as functions over Arrow record batches;
these helpers apply such a function, and add run columns, to either form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake.lake.schemas import arrow_schema

Rows = DataFrame | pa.Table


def map_in_arrow(rows: Rows, function: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]], schema: T.StructType) -> Rows:
    """``rows.mapInArrow(function, schema)``; for an Arrow table, the same function run here on the driver."""
    if isinstance(rows, pa.Table):
        out = arrow_schema(schema)
        return pa.Table.from_batches([batch.cast(out) for batch in function(iter(rows.to_batches()))], schema=out)
    return rows.mapInArrow(function, schema)


def with_values(rows: Rows, values: Mapping[str, Any]) -> Rows:
    """``rows`` plus one column per entry of ``values``, the same value on every row (run id, times)."""
    for name, value in values.items():
        if isinstance(rows, pa.Table):
            rows = rows.append_column(name, pa.array([value] * rows.num_rows))
        else:
            rows = rows.withColumn(name, F.lit(value))
    return rows
