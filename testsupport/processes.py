"""The web server and the vote worker as real OS processes, for the tests and the bench.

Also what the bench reads of them: CPU seconds and resident memory from /proc, and
server processes sharing one listening socket passed with --fd.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from devservices import free_port

REPO = Path(__file__).resolve().parent.parent

# Every process started since the last kill_leftovers(): a test that fails between two
# starts (a worker that cannot start after its web did) must not leave the first running.
_started: list[ManagedProcess] = []


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> None:
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


def proc_memory(pids: Sequence[int]) -> dict[str, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM from /proc), MB, summed over `pids`."""
    rss = peak = 0.0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1]) / 1024
    return {"rss_mb": rss, "peak_mb": peak}


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants, the exited ones it reaped included.

    For a server that forks a process per client (PostgreSQL's postmaster): the
    difference of two readings is what the server spent between them.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    own_and_reaped = sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")
    return own_and_reaped + sum(proc_cpu_seconds(child) for child in child_pids(pid))


class ManagedProcess:
    """A child process in its own session, its output in a log file, stopped by SIGTERM or SIGKILL.

    `pass_fds` are inherited (a listening socket for --fd); `cwd` is the tree it runs
    from (the bench runs another checkout's worker for an A/B comparison).
    """

    def __init__(
        self,
        *,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
        pass_fds: Sequence[int] = (),
        cwd: Path = REPO,
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.pass_fds = tuple(pass_fds)
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def start(self):
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=self.pass_fds,
            )
        _started.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

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

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the whole session, SIGKILL after `timeout` s: the bench's end of a run."""
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def memory(self) -> dict[str, float]:
        """Resident memory now and at its peak, MB, of the process and its children."""
        return proc_memory([self.pid, *child_pids(self.pid)])


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
            args=[
                sys.executable,
                "-m",
                "polling.serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=env,
            log_dir=log_dir,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> WebServer:
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
        return self


class SocketWebServer:
    """`procs` server processes on one listening socket, bound here and passed with --fd
    as a process supervisor would; the kernel spreads the connections.

    server="uvicorn" with the product's app runs `python -m polling.serve`; another app
    runs under uvicorn's own command with the same options; server="daphne" runs the
    development server. BENCH_PYTHON in `env` names another interpreter to run them.
    """

    def __init__(
        self,
        *,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        procs: int = 1,
        server: str = "uvicorn",
        app: str = "polling.asgi:application",
        repo: Path = REPO,
        server_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.repo = repo
        self.server_args = list(server_args)
        self.env = env
        self.log_dir = log_dir
        self.procs_wanted = procs
        self.server = server
        self.app = app
        self.port = 0
        self.socket: socket.socket | None = None
        self.processes: list[ManagedProcess] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _args(self, fd: int) -> list[str]:
        python = self.env.get("BENCH_PYTHON", sys.executable)
        # As production runs them: without the server's own access log (the application
        # writes one JSON line per request).
        if self.server == "daphne":
            return [python, "-m", "daphne", "-v", "0", "--fd", str(fd), *self.server_args, self.app]
        if self.server == "uvicorn" and self.app == "polling.asgi:application":
            return [python, "-m", "polling.serve", "--fd", str(fd), *self.server_args]
        if self.server == "uvicorn":
            return [
                python,
                "-m",
                "uvicorn",
                "--no-access-log",
                "--lifespan",
                "off",
                "--ws",
                "websockets-sansio",
                "--ws-per-message-deflate",
                "false",
                "--fd",
                str(fd),
                *self.server_args,
                self.app,
            ]
        raise ValueError(f"unknown server {self.server}")

    def start(self, timeout: float = 60) -> SocketWebServer:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(4096)
        self.socket.set_inheritable(True)
        self.port = self.socket.getsockname()[1]
        fd = self.socket.fileno()
        for index in range(self.procs_wanted):
            process = ManagedProcess(
                name=f"{self.name}-{index}",
                args=self._args(fd),
                env=self.env,
                log_dir=self.log_dir,
                pass_fds=[fd],
                cwd=self.repo,
            )
            self.processes.append(process.start())

        def answers() -> bool:
            for process in self.processes:
                if not process.alive():
                    raise RuntimeError(f"{process.name} exited:\n{process.log()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/leaderboard", timeout=2).read()
                return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                return False

        try:
            wait_until(answers, timeout=timeout, what=f"{self.name} to answer")
        except BaseException:
            self.stop()
            raise
        # Each process imports Django lazily on its first request: warm all of them.
        for _ in range(4 * self.procs_wanted):
            urllib.request.urlopen(f"{self.url}/leaderboard", timeout=5).read()
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self.socket is not None:
            self.socket.close()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def serving_pids(self) -> list[int]:
        """The processes that run the application."""
        return self.pids()

    def memory(self) -> dict[str, float]:
        """Per process: the largest current and peak RSS among the server processes."""
        figures = [p.memory() for p in self.processes]
        return {"rss_mb": max(f["rss_mb"] for f in figures), "peak_mb": max(f["peak_mb"] for f in figures)}

    def cpu_seconds(self) -> float:
        return sum(tree_cpu_seconds(pid) for pid in self.pids())


class WorkerProcess(ManagedProcess):
    """`manage.py consume_votes`, the vote worker.

    `batch_wait_ms` None leaves the product's default (the bench measures that one).
    """

    def __init__(
        self,
        *,
        env: dict[str, str],
        log_dir: Path,
        group: str,
        name: str = "worker",
        extra: Sequence[str] = (),
        batch_wait_ms: int | None = 50,
        python: str = sys.executable,
        cwd: Path = REPO,
    ) -> None:
        wait = ["--batch-wait-ms", str(batch_wait_ms)] if batch_wait_ms is not None else []
        super().__init__(
            name=name,
            args=[python, "manage.py", "consume_votes", "--group", group, *wait, *extra],
            env=env,
            log_dir=log_dir,
            cwd=cwd,
        )

    def start(self, timeout: float = 60, *, wait: bool = True) -> WorkerProcess:
        super().start()
        if wait:
            self._wait_logged(lambda log: "consuming" in log, timeout=timeout, what="start consuming")
        return self

    def wait_assigned(self, topic: str, timeout: float = 30) -> None:
        """Wait until the consumer group has given this worker partitions of `topic`.

        "consuming" is logged before the group is joined, and a vote sent meanwhile waits
        for the join and the assignment: once, a test's poll closed 4 s after its vote's
        204 with the worker still to apply it, and its log said nothing after "consuming".
        """
        self._wait_logged(
            lambda log: any("partitions assigned: " in line and f"{topic}[" in line for line in log.splitlines()),
            timeout=timeout,
            what=f"be assigned partitions of {topic}",
        )

    def _wait_logged(self, found: Callable[[str], bool], *, timeout: float, what: str) -> None:
        def logged() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
            return found(self.log())

        wait_until(logged, timeout=timeout, what=f"{self.name} to {what}")
