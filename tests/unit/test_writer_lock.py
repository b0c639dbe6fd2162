"""The lake's writer lock between real processes: who holds it, and writers asking for a turn."""

import os
import signal
import subprocess
import sys
import time

import pytest

from interestlake.lake.lock import LakeBusyError, lock_holder, turn_requests, writer_lock

HOLD = """
import sys, time
from interestlake.lake.lock import writer_lock
with writer_lock(sys.argv[1], sys.argv[2], float(sys.argv[3])):
    print("held", flush=True)
    time.sleep(float(sys.argv[4]))
"""


def holder_process(root, owner: str, wait: float = 0.0, hold: float = 60.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(root), owner, str(wait), str(hold)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_the_holder_is_seen_and_released_when_killed(tmp_path):
    assert lock_holder(str(tmp_path)) is None
    stream = holder_process(tmp_path, "stream__2026-12-02T10:00:00+00:00")
    try:
        assert stream.stdout.readline().strip() == "held"
        holder = lock_holder(str(tmp_path))
        assert holder["pid"] == stream.pid and holder["owner"] == "stream__2026-12-02T10:00:00+00:00"
        with pytest.raises(LakeBusyError, match="stream__2026-12-02"):
            with writer_lock(str(tmp_path), "manual__x"):
                pass
    finally:
        stream.kill()
        stream.wait()
    # The kernel released the killed holder's lock: nobody holds it, whatever the file says.
    assert lock_holder(str(tmp_path)) is None
    refresh = holder_process(tmp_path, "manual__2026-12-02T10:05:00+00:00")
    try:
        assert refresh.stdout.readline().strip() == "held"
        assert lock_holder(str(tmp_path))["owner"] == "manual__2026-12-02T10:05:00+00:00"
    finally:
        refresh.kill()
        refresh.wait()


def test_a_waiting_writer_asks_for_a_turn_and_a_dead_ones_request_is_dropped(tmp_path):
    root = str(tmp_path)
    with writer_lock(root, "stream__holder"):
        waiter = holder_process(tmp_path, "maintain-run", wait=30, hold=0)
        wait_until(lambda: turn_requests(root) == ["maintain-run"])
        # The holder lets go: the waiter takes the lock, does its work and withdraws its request.
    assert waiter.wait(timeout=30) == 0 and waiter.stdout.read().strip() == "held"
    assert turn_requests(root) == []

    with writer_lock(root, "stream__holder"):
        killed = holder_process(tmp_path, "killed-run", wait=30)
        wait_until(lambda: turn_requests(root) == ["killed-run"])
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        # Its request file is left behind but no longer locked: stale, removed.
        assert turn_requests(root) == []
        assert not list((tmp_path / "_locks" / "requests").glob("*.json"))


PRESENCE = """
import sys, time
from interestlake.lake.lock import StreamPresence
presence = StreamPresence(sys.argv[1], sys.argv[2])
presence.acquire()
print("running", flush=True)
time.sleep(60)
"""


def test_a_running_stream_is_seen_while_it_lends_the_writer_lock_and_not_after_it_is_killed(tmp_path):
    from interestlake.lake.lock import StreamPresence, stream_running

    root = str(tmp_path)
    assert stream_running(root) is None
    stream = subprocess.Popen([sys.executable, "-c", PRESENCE, root, "stream__2026-12-05T04:00:00+00:00"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert stream.stdout.readline().strip() == "running"
        # Another writer holds the writer lock (lent to it): the stream is still seen.
        with writer_lock(root, "catalog-ingest"):
            running = stream_running(root)
            assert running["owner"].startswith("stream__") and running["pid"] == stream.pid
            assert lock_holder(root)["owner"] == "catalog-ingest"
        with pytest.raises(LakeBusyError, match="another interestlake stream"):
            StreamPresence(root, "stream__second").acquire()
    finally:
        stream.kill()
        stream.wait()
    # The kernel released the killed stream's lock.
    assert stream_running(root) is None
    presence = StreamPresence(root, "stream__next")
    presence.acquire()
    try:
        assert stream_running(root)["owner"] == "stream__next"
    finally:
        presence.release()
    assert stream_running(root) is None
