"""A Spark standalone cluster on loopback: one master and one-core workers, for the cluster tests.

Started with the launcher shipped in the pyspark package (``pyspark/bin/spark-class``,
which ``exec``s the JVM, so each process id is the JVM's), each process in the
cluster's own folder; stopped by those process ids. docs/cluster.md ("A standalone
cluster on one machine") shows the same commands.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pyspark

SPARK_CLASS = Path(pyspark.__file__).resolve().parent / "bin" / "spark-class"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    """The cluster did not come up (the message holds the end of its logs)."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandaloneCluster:
    """A master and ``workers`` workers of ``cores`` cores and ``memory`` each, on 127.0.0.1.

    Args:
        folder: Where the processes run and write their logs and executors' work dirs;
            every process of the cluster (executors and their Python workers too) has
            its working directory under it, which is how ``leftovers`` finds them.
        workers: Number of workers.
        cores: Cores each worker offers.
        memory: Memory each worker offers to executors (an executor's heap must fit).
        daemon_memory: Heap of the master and worker JVMs themselves.
    """

    def __init__(self, folder: Path, workers: int = 2, cores: int = 1, memory: str = "1g", daemon_memory: str = "256m"):
        self.folder = Path(folder).resolve()
        self.workers, self.cores, self.memory = workers, cores, memory
        self.port, self.ui_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": daemon_memory,
            # The launcher must not pick up a Spark installation of the machine.
            "SPARK_HOME": str(SPARK_CLASS.parent.parent),
        }
        # The master and workers take the JVM options the test run gives its drivers (conftest).
        if os.environ.get("SPARK_SUBMIT_OPTS"):
            self.env.setdefault("SPARK_DAEMON_JAVA_OPTS", os.environ["SPARK_SUBMIT_OPTS"])
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def master_command(self) -> list[str]:
        return [str(SPARK_CLASS), MASTER_CLASS, "--host", "127.0.0.1", "--port", str(self.port),
                "--webui-port", str(self.ui_port)]

    def worker_command(self, index: int) -> list[str]:
        return [str(SPARK_CLASS), WORKER_CLASS, "--host", "127.0.0.1", "--cores", str(self.cores),
                "--memory", self.memory, "--work-dir", str(self.folder / f"worker-{index}"),
                "--webui-port", str(free_port()), self.master_url]

    def start(self, timeout: float = 180.0) -> StandaloneCluster:
        """Starts the master, then the workers, and returns once every worker registered."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._spawn("master", self.master_command())
            self._wait(lambda state: state.get("status") == "ALIVE", timeout, "the master to start")
            for index in range(self.workers):
                self._spawn(f"worker-{index}", self.worker_command(index))
            self._wait(lambda state: len(self.alive_workers(state)) == self.workers, timeout,
                       f"{self.workers} workers to register")
        except BaseException:
            self.stop()
            raise
        return self

    def state(self) -> dict:
        """The master's JSON status page (workers, running and completed applications)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
            return json.load(response)

    @staticmethod
    def alive_workers(state: dict) -> list[dict]:
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def stop(self, timeout: float = 60.0) -> list[str]:
        """Stops the workers (which stop their executors), then the master, by process id.

        SIGTERM first, SIGKILL for whatever is still alive after ``timeout`` seconds.

        Returns:
            The processes still running under the cluster's folder afterwards (should be none).
        """
        for name in sorted(self.processes, key=lambda n: n == "master"):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        # Executors and their Python workers exit once their worker is gone; give them a moment.
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        """``pid: command`` of every process of the cluster or its applications still running.

        That is every process whose working directory or command line is under the
        cluster's folder (master, workers, executors and their Python workers) or
        whose command line names the master (a driver submitted to it).
        """
        found = []
        folder = str(self.folder)
        names_master = re.compile(re.escape(self.master_url) + r"(?!\d)")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue  # gone meanwhile, or not ours to read
            ours = cwd == folder or cwd.startswith(folder + os.sep) or folder in command or names_master.search(command)
            if command and ours:
                found.append(f"{entry.name}: {command[:300]}")
        return found

    def logs(self, tail: int = 3000) -> str:
        """The end of each process's log, for error messages."""
        parts = []
        for name in self.processes:
            path = self.folder / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def _spawn(self, name: str, command: list[str]) -> None:
        with open(self.folder / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                command, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, p in self.processes.items() if p.poll() is not None]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}\n{self.logs()}")
            try:
                if ready(self.state()):
                    return
            except (OSError, ValueError):
                # The web UI is not up yet, or (seen once on a loaded 2-core machine) its Jetty
                # answered /json/ with the HTML page before the JSON handler was attached.
                pass
            time.sleep(0.5)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.logs()}")
