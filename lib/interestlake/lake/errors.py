"""The lake layer's base error, in a module without Spark: the writer lock (which the Airflow
DAGs consult) raises it too."""


class LakeError(RuntimeError):
    """The lake cannot be used as asked (missing table, wrong schema)."""
