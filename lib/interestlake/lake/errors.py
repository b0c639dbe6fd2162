"""The lake layer's errors, in a module without Spark: the writer lock (which the Airflow
DAGs consult) raises ``LakeError`` too, and the CLI tells a full or read-only disk
(``storage_failure``) from other errors."""


class LakeError(RuntimeError):
    """The lake cannot be used as asked (missing table, wrong schema)."""


class LakeConflictError(LakeError):
    """Another writer committed to the same table in between; the write was not applied."""


class LakeHistoryGone(LakeError):
    """A past version of a table is no longer in its Delta log (older than the log retention).

    An incremental stage reads what changed since the versions its last run read;
    when those were cleaned up, the stage must recompute in full instead.
    """


# What the operating system says when the lake's storage refuses a write, in the words
# Python, Java (Spark, Hadoop) and Rust (delta-rs) all quote from strerror().
STORAGE_FAILURES = ("No space left on device", "Read-only file system", "Disk quota exceeded", "Permission denied")


def storage_failure(exc: BaseException) -> str | None:
    """The storage failure behind an error (``STORAGE_FAILURES``), or None when it is something else.

    A write that fails in a Spark task, a streaming query or a delta-rs commit surfaces
    as that layer's own error whose text quotes the operating system's; the causes and
    contexts of ``exc`` are searched too.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        for failure in STORAGE_FAILURES:
            if failure.lower() in text.lower():
                return failure
        exc = exc.__cause__ or exc.__context__
    return None
