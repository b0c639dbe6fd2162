"""The single-writer guard: one process writes to a lake at a time.

Nothing here imports Spark: the Airflow DAGs ask it whether a stream runs on the lake.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from interestlake.lake.errors import LakeError

log = logging.getLogger(__name__)
# The owner name of `interestlake stream` starts with this (DAGs and messages recognise it).
STREAM_OWNER_PREFIX = "stream"


class LakeBusyError(LakeError):
    """Another process holds the lake's writer lock."""


def _locks_folder(lake_root: str) -> Path | None:
    """``<lake.root>/_locks`` of a local lake; None on object stores (no file locks there)."""
    if "://" in lake_root and not lake_root.startswith("file://"):
        return None
    return Path(lake_root.removeprefix("file://")) / "_locks"


class _HeldLockFile:
    """A lock file this process may hold (``_fd``), given up by ``release``."""

    _fd: int | None = None

    def release(self) -> None:
        """Gives the lock up (nothing when it is not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class WriterLock(_HeldLockFile):
    """The lake's exclusive writer lock, which a long-running holder can hand over and take back.

    An OS file lock (``flock``) on ``<lake.root>/_locks/writer.lock``: the kernel
    releases it when the holder exits, even on SIGKILL, so a crashed run never
    leaves a stale lock behind. A writer that waits for it leaves a *turn request*
    under ``_locks/requests/`` (itself flock-ed, so a request of a killed process
    is recognised as stale), which a long-running holder (``interestlake stream``)
    honours between its batches (``turn_requests``).

    Args:
        lake_root: The lake root. On object stores (no file locks) the guard is
            the scheduler's (Airflow's ``max_active_runs=1``) and Delta's commit
            conflict detection; a warning says so.
        owner: Who holds the lock (a run id), shown to the process that waits.
    """

    def __init__(self, lake_root: str, owner: str):
        self.lake_root, self.owner = lake_root, owner
        self.folder = _locks_folder(lake_root)
        self._fd: int | None = None

    def acquire(self, wait_seconds: float = 0.0) -> None:
        """Takes the lock, waiting up to ``wait_seconds``.

        Raises:
            LakeBusyError: When the lock is still held after ``wait_seconds``.
        """
        if self.folder is None:
            log.warning("writer lock: %s is not a local path; relying on the scheduler to run one writer", self.lake_root)
            return
        path = self.folder / "writer.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        request = None
        try:
            deadline = time.monotonic() + wait_seconds
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = path.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
                    if time.monotonic() >= deadline:
                        raise LakeBusyError(
                            f"another writer is using the lake {self.lake_root} ({holder}); "
                            "it was left untouched. Retry when that run has finished, or pass --wait SECONDS"
                        ) from None
                    if request is None:
                        log.info("waiting up to %.0fs for the lake writer lock held by %s", wait_seconds, holder)
                        request = _TurnRequest(self.folder, self.owner)
                    time.sleep(0.5)
            _write_record(fd, self.owner)
        except BaseException:
            os.close(fd)
            raise
        finally:
            if request is not None:
                request.withdraw()
        self._fd = fd


@contextmanager
def writer_lock(lake_root: str, owner: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Holds the lake's exclusive writer lock (``WriterLock``) for the duration of the block.

    Raises:
        LakeBusyError: When the lock is still held after ``wait_seconds``.
    """
    lock = WriterLock(lake_root, owner)
    lock.acquire(wait_seconds)
    try:
        yield
    finally:
        lock.release()


class _TurnRequest:
    """A waiting writer's request file, flock-ed by it for as long as it waits.

    Created under a temporary name, locked, then renamed: a file with the final name is
    never unlocked while its writer lives, so an unlocked one is stale.
    """

    def __init__(self, folder: Path, owner: str):
        requests = folder / "requests"
        requests.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        temporary = requests / f".{name}.tmp"
        self.path = requests / f"{name}.json"
        self._fd = os.open(temporary, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, json.dumps({"owner": owner, "pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.rename(temporary, self.path)

    def withdraw(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self._fd)


def turn_requests(lake_root: str) -> list[str]:
    """The owners of the writers waiting for the lock now; stale requests (their process is gone) are removed."""
    folder = _locks_folder(lake_root)
    if folder is None or not (folder / "requests").is_dir():
        return []
    waiting = []
    for path in sorted((folder / "requests").glob("*.json")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # withdrawn meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                waiting.append(_owner(path.read_text(encoding="utf-8", errors="replace")))
                continue
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return waiting


def lock_holder(lake_root: str) -> dict | None:
    """Who holds the writer lock now (``owner``, ``pid``, ``host``, ``since``), None when nobody does.

    Always None on object stores, where there is no lock.
    """
    return _holder(lake_root, "writer.lock")


class StreamPresence(_HeldLockFile):
    """``<lake.root>/_locks/stream.lock``, flock-ed by an ``interestlake stream`` for as long as it runs.

    The writer lock cannot say that a stream runs: the stream lends it to writers that wait
    for it. A job that would run its own query on the stream's checkpoint (ingest) asks
    ``stream_running`` first. The kernel releases the lock when the stream exits, even on SIGKILL.
    """

    def __init__(self, lake_root: str, owner: str):
        self.folder, self.owner = _locks_folder(lake_root), owner
        self._fd: int | None = None

    def acquire(self) -> None:
        """Marks the stream as running (nothing on object stores, where there are no file locks).

        Raises:
            LakeBusyError: Another stream runs on this lake (it lent the writer lock to this one).
        """
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / "stream.lock", os.O_RDWR | os.O_CREAT, 0o644)
        # A `stream_running` check holds a shared lock for an instant: try for a second.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LakeBusyError(f"another interestlake stream runs on the lake {self.folder.parent}") from None
                time.sleep(0.05)
        _write_record(fd, self.owner)
        self._fd = fd


def stream_running(lake_root: str) -> dict | None:
    """The ``interestlake stream`` running on this lake (``owner``, ``pid``, ``host``, ``since``), else None.

    Also while the stream has lent the writer lock to another writer. Always None on object stores.
    """
    return _holder(lake_root, "stream.lock")


def _write_record(fd: int, owner: str) -> None:
    """Who holds a lock file, written into it: what ``_holder`` reads back and messages show."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({
        "owner": owner, "pid": os.getpid(), "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }).encode(), 0)


def _holder(lake_root: str, name: str) -> dict | None:
    """The record in ``_locks/<name>`` while some process holds that file's lock, else None."""
    folder = _locks_folder(lake_root)
    path = folder / name if folder is not None else None
    if path is None or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            try:
                return json.loads(text)
            except ValueError:
                return {"owner": text or "unknown"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _owner(text: str) -> str:
    try:
        return str(json.loads(text).get("owner", "unknown"))
    except (ValueError, AttributeError):
        return "unknown"
