"""Process management shared by every service.

Each server runs as a child started with ``subprocess.Popen`` in its own session, so
that it survives the ``python -m devservices up`` process that started it and so that
its whole process group can be SIGKILLed at once. Its output goes to ``<name>.log``
and its pid to ``<name>.pid``, both in the service's data directory; the pidfile lets
a later process (``down``, ``status``, a second ``up``) find a server it did not start.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES_DIR = REPO_ROOT / ".services"

# Ports handed out by free_port() in this process, so that two calls in a row (a
# Kafka listener and its controller) never return the same port.
_handed_out_ports: set[int] = set()


class ServiceError(RuntimeError):
    """A service could not be installed, started, made ready or stopped."""


def services_dir() -> Path:
    """``<repo>/.services`` (git-ignored), created on first use."""
    SERVICES_DIR.mkdir(exist_ok=True)
    return SERVICES_DIR


def free_port() -> int:
    """A TCP port that is free right now, not yet handed out here, and below the
    kernel's ephemeral range.

    A port from the ephemeral range (what binding port 0 gives) can be taken as the
    local port of any outgoing connection between this check and the server's own bind;
    a test once failed on exactly that, a worker's metrics port taken while the web
    process beside it connected to its services. Ports below the range are only ever
    taken by a bind. Checked on every address, as servers here may listen on 0.0.0.0.
    """
    last = _ephemeral_ports_start() - 1
    first = max(1024, last - 12000)
    while True:
        # A kernel whose range starts too low leaves nothing below it: its own choice then.
        port = random.randint(first, last) if last - first >= 1000 else 0
        if port in _handed_out_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        if port in _handed_out_ports:
            continue
        _handed_out_ports.add(port)
        return port


def _ephemeral_ports_start() -> int:
    """The first port of the kernel's range for outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_open(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40, start: int = 0) -> str:
    """The last ``lines`` lines of a log file from byte offset ``start``."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(start, size - 64 * 1024))
            text = log.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return stat.rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie.

    Zombies count as dead: a server left behind by an earlier ``up`` is re-parented to
    PID 1, which on this kind of machine does not reap it, so it stays a zombie after
    exiting.
    """
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
                return True
    return False


class Service(ABC):
    """One server process on 127.0.0.1:``port`` whose files live in ``data_dir``."""

    name: ClassVar[str]
    # Signal for a clean shutdown; SIGKILL follows if it takes longer than stop_timeout.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 30.0
    ready_timeout: ClassVar[float] = 30.0

    def __init__(self, *, port: int, data_dir: Path | str) -> None:
        self.port = port
        self.data_dir = Path(data_dir).absolute()
        self._proc: subprocess.Popen[bytes] | None = None
        # The log is appended to across restarts; readiness checks that read it must
        # only look at the current run's output, which starts here.
        self._log_offset = 0

    # -- what each service defines ------------------------------------------------

    @abstractmethod
    def _executable(self) -> Path:
        """The server binary; also what /proc/<pid>/exe must be for a pidfile to be trusted."""

    @abstractmethod
    def _command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    @abstractmethod
    def _probe_ready(self) -> bool:
        """One quick check whether the running server is ready for clients."""

    def _prepare(self) -> None:
        """Create whatever the server needs in data_dir before it is launched."""

    def _after_ready(self) -> None:
        """Set up the ready server for clients (e.g. create a database)."""

    def _popen_kwargs(self) -> dict[str, Any]:
        """Extra subprocess.Popen arguments (user, env, cwd)."""
        return {}

    def _ports(self) -> Sequence[int]:
        """Every port the server listens on; all must be free before it starts."""
        return (self.port,)

    # -- public API ---------------------------------------------------------------

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.name}.pid"

    @property
    def pid(self) -> int | None:
        """Pid of the running server, whether this object or an earlier process started it."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) and self._is_server(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float | None = None) -> None:
        """Start the server and wait until it is ready; only wait if it already runs.

        Raises ServiceError, with the end of the server's log, if a port is taken, the
        process exits, or it is not ready within ``timeout`` seconds; a server that
        failed to become ready is killed rather than left behind.
        """
        if self.is_running():
            self.wait_ready(timeout)
            return
        for port in self._ports():
            if port_open(port):
                raise ServiceError(
                    f"{self.name}: port {port} is already in use by a process devservices "
                    f"did not start from {self.data_dir}; stop that process or use another port"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        with self.log_file.open("ab") as log:
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._popen_kwargs(),
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        try:
            self.wait_ready(timeout)
            self._after_ready()
        except BaseException:
            self.kill()
            raise

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the server is ready; raise ServiceError if it exits or times out."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                code = self._proc.returncode if self._proc is not None else None
                exited = "exited" if code is None else f"exited with code {code}"
                raise ServiceError(self._describe_failure(f"{exited} before it was ready"))
            if self._probe_ready():
                return
            if time.monotonic() > deadline:
                raise ServiceError(self._describe_failure(f"not ready after {timeout:.0f} s"))
            time.sleep(0.2)

    def stop(self, timeout: float | None = None) -> None:
        """Shut down cleanly; SIGKILL the process group if that takes over ``timeout`` s."""
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, self.stop_signal)
            except ProcessLookupError:  # exited between the check and the signal
                pass
            if not self._wait_exit(pid, self.stop_timeout if timeout is None else timeout):
                self._kill_group(pid)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server and every process it started, like a crash."""
        pid = self.pid
        if pid is not None:
            self._kill_group(pid)
        self._forget()

    def restart(self, timeout: float | None = None) -> None:
        """Stop (if running) and start again on the same ports and data."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port}, data_dir={str(self.data_dir)!r})"

    # -- helpers ------------------------------------------------------------------

    def _describe_failure(self, what: str) -> str:
        return (
            f"{self.name} on 127.0.0.1:{self.port} {what}.\n"
            f"--- last lines of {self.log_file} ---\n"
            f"{log_tail(self.log_file, start=self._log_offset)}"
        )

    def _log_since_start(self) -> str:
        """This run's output so far (the log may hold earlier runs too)."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _is_server(self, pid: int) -> bool:
        """Guards against a stale pidfile whose pid now belongs to something else."""
        try:
            return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(self._executable())
        except OSError:
            return False

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        """Wait for the server to exit (reaping it if it is our child)."""
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _kill_group(self, pid: int) -> None:
        """SIGKILL the server's process group and wait until all of it is gone.

        The group, not just the pid: PostgreSQL's backends outlive a killed postmaster
        for a moment and a new postmaster refuses to start while they still hold the old
        shared memory. The server leads its own group thanks to start_new_session.
        """
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if not self._wait_exit(pid, 10):
            raise ServiceError(f"{self.name} (pid {pid}) survived SIGKILL for 10 s")
        # A process stuck in uninterruptible I/O dies late on a loaded machine; until it has,
        # a new postmaster refuses its data directory ("shared memory block still in use").
        deadline = time.monotonic() + 30
        while group_alive(pid):
            if time.monotonic() > deadline:
                raise ServiceError(f"processes of {self.name}'s group (pid {pid}) survived SIGKILL for 30 s")
            time.sleep(0.05)

    def _forget(self) -> None:
        if self._proc is not None:
            self._proc.poll()  # reap it if it exited and nobody waited yet
            self._proc = None
        self.pid_file.unlink(missing_ok=True)
