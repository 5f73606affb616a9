"""The web server and the vote worker as real OS processes, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from devservices import free_port

REPO = Path(__file__).resolve().parent.parent

# Every process started since the last kill_leftovers(): a test that fails between two
# starts (a worker that cannot start after its web did) must not leave the first running.
_started: list[ManagedProcess] = []


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def child_pids(pid: int) -> list[int]:
    """Every descendant of a process (from /proc): uvicorn's server processes, PostgreSQL's backends."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[1] == str(pid):
                children.append(int(entry.name))
                children.extend(child_pids(int(entry.name)))
    return children


class ManagedProcess:
    """A child process with its output in a log file, stopped by SIGTERM or SIGKILL."""

    def __init__(self, *, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _started.append(self)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait: the clean shutdown an operator's stop sends."""
        assert self.process is not None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout} s:\n{self.log()[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process is not None and self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def kill_leftovers() -> None:
    """SIGKILL every process started since the last call that still runs (a test's teardown)."""
    while _started:
        _started.pop().kill()


class WebServer(ManagedProcess):
    """The production server (`python -m polling.serve`: uvicorn, HTTP and WebSockets)."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, port: int | None = None, workers: int = 1) -> None:
        self.port = port or free_port()
        self.workers = workers
        super().__init__(
            name=f"web-{self.port}",
            args=[sys.executable, "-m", "polling.serve", "--host", "127.0.0.1", "--port", str(self.port),
                  "--workers", str(workers)],
            env=env,
            log_dir=log_dir,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        super().start()

        def answers() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/leaderboard", timeout=1).read()
                return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_until(answers, timeout=timeout, what=f"{self.name} to answer")


class WorkerProcess(ManagedProcess):
    """`manage.py consume_votes`, the vote worker."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, group: str, name: str = "worker", extra: list[str] | None = None) -> None:
        super().__init__(
            name=name,
            args=[sys.executable, "manage.py", "consume_votes", "--group", group, "--batch-wait-ms", "50", *(extra or [])],
            env=env,
            log_dir=log_dir,
        )

    def start(self, timeout: float = 60, *, wait: bool = True) -> None:
        super().start()
        if wait:
            self._wait_logged(lambda log: "consuming" in log, timeout=timeout, what="start consuming")

    def wait_assigned(self, topic: str, timeout: float = 30) -> None:
        """Wait until the consumer group has given this worker partitions of `topic`.

        "consuming" is logged before the group is joined, and a vote sent meanwhile waits
        for the join and the assignment: once, a test's poll closed 4 s after its vote's
        204 with the worker still to apply it, and its log said nothing after "consuming".
        """
        self._wait_logged(
            lambda log: any("partitions assigned: " in line and f"{topic}[" in line for line in log.splitlines()),
            timeout=timeout, what=f"be assigned partitions of {topic}",
        )

    def _wait_logged(self, found: Callable[[str], bool], *, timeout: float, what: str) -> None:
        def logged() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
            return found(self.log())

        wait_until(logged, timeout=timeout, what=f"{self.name} to {what}")
