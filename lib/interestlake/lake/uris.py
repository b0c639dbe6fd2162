"""How pyarrow opens the paths that Spark and delta-rs write.

Spark spells a local path ``file:/x`` and S3 ``s3a://bucket/key``; pyarrow's file systems
want ``/x`` and ``s3://bucket/key``. Every module that hands a Spark or Delta path to
pyarrow (the lake's driver reads, the landing reader, the stages' scratch files) converts
it here. Standard library only.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse


def readable_uri(path: str) -> str:
    """A URI pyarrow can open for a path as Spark spells it ('file:/x', 's3a://b/k')."""
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme in ("s3a", "s3n"):
        return "s3://" + path.split("://", 1)[1]
    return path
