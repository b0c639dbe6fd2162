"""Peak resident memory of the processes of a Spark run, sampled while it works."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class PeakMemory:
    """Peak RSS (MiB) of a driver process (this one by default), the JVM it started, and any one Python worker.

    ``series`` keeps every sample as (driver, JVM, largest worker) MiB, for a check that memory stays flat.
    """

    driver_python_mb: float = 0.0
    jvm_mb: float = 0.0
    python_worker_mb: float = 0.0
    samples: int = 0
    pid: int | None = None
    series: list[tuple[float, float, float]] = field(default_factory=list, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def as_dict(self) -> dict[str, float]:
        return {
            "driver_python_peak_mb": round(self.driver_python_mb, 1),
            "driver_jvm_peak_mb": round(self.jvm_mb, 1),
            "python_worker_peak_mb": round(self.python_worker_mb, 1),
        }

    def _sample(self, interval: float) -> None:
        import psutil

        me = psutil.Process(self.pid or os.getpid())
        while True:
            try:
                driver = me.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                return  # the driver process ended
            jvm = worker = 0.0
            for child in me.children(recursive=True):
                try:
                    name = " ".join(child.cmdline())
                    rss = child.memory_info().rss / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue  # a worker that ended between the listing and the reading
                if "java" in name:
                    jvm = max(jvm, rss)
                elif "pyspark" in name or "worker" in name:
                    # The daemon forks the workers; each worker is measured on its own.
                    worker = max(worker, rss)
            self.driver_python_mb = max(self.driver_python_mb, driver)
            self.jvm_mb = max(self.jvm_mb, jvm)
            self.python_worker_mb = max(self.python_worker_mb, worker)
            self.series.append((driver, jvm, worker))
            self.samples += 1
            if self._stop.wait(interval):
                return


@contextmanager
def peak_memory(interval: float = 0.1, pid: int | None = None) -> Iterator[PeakMemory]:
    """Samples process memory every ``interval`` seconds for the length of the block.

    In local mode the executors are the driver's JVM and its Python workers,
    which are children of the driver process (this one, or ``pid``).
    """
    peaks = PeakMemory(pid=pid)
    thread = threading.Thread(target=peaks._sample, args=(interval,), daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        peaks._stop.set()
        thread.join()
