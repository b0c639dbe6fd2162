"""The single-writer guard: one process writes to a lake at a time."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from interestlake.lake.tables import LakeError

log = logging.getLogger(__name__)


class LakeBusyError(LakeError):
    """Another process holds the lake's writer lock."""


@contextmanager
def writer_lock(lake_root: str, owner: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Holds the lake's exclusive writer lock for the duration of the block.

    An OS file lock (``flock``) on ``<lake.root>/_locks/writer.lock``: the kernel
    releases it when the holder exits, even on SIGKILL, so a crashed run never
    leaves a stale lock behind.

    Args:
        lake_root: The lake root. On object stores (no file locks) the guard is
            the scheduler's (Airflow's ``max_active_runs=1``) and Delta's commit
            conflict detection; a warning says so.
        owner: Who holds the lock (a run id), shown to the process that waits.
        wait_seconds: How long to wait for the lock before giving up.

    Raises:
        LakeBusyError: When the lock is still held after ``wait_seconds``.
    """
    if "://" in lake_root and not lake_root.startswith("file://"):
        log.warning("writer lock: %s is not a local path; relying on the scheduler to run one writer", lake_root)
        yield
        return
    path = Path(lake_root.removeprefix("file://")) / "_locks" / "writer.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = path.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
                if time.monotonic() >= deadline:
                    raise LakeBusyError(
                        f"another writer is using the lake {lake_root} ({holder}); "
                        "it was left untouched. Retry when that run has finished, or pass --wait SECONDS"
                    ) from None
                if not announced:
                    log.info("waiting up to %.0fs for the lake writer lock held by %s", wait_seconds, holder)
                    announced = True
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({
            "owner": owner, "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
