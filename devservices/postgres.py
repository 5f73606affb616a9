"""A PostgreSQL server run from Debian's binaries on a private data directory."""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

from ._base import Service, ServiceError
from .install import postgres_bin_dir

# The server reads its settings from here on every start; they are passed with -c
# rather than written into postgresql.conf so that a data directory can be restarted
# on another port. fsync stays on: the fault tests rely on committed data surviving
# a SIGKILL.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    # No Unix socket: clients use TCP, and a socket path inside a deep temporary
    # directory can exceed the 107-byte limit of sun_path.
    "unix_socket_directories": "",
    "max_connections": "200",
    "shared_buffers": "64MB",
}


class PostgresServer(Service):
    """PostgreSQL on 127.0.0.1:``port``; the cluster lives in ``data_dir/pgdata``.

    ``start()`` runs initdb on first use, with ``user`` (password ``password``) as the
    bootstrap superuser, so Django's test runner may create test databases, and
    creates ``database`` owned by it.
    """

    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: abort open transactions, checkpoint, exit.
    stop_signal = signal.SIGINT
    stop_timeout = 60.0
    ready_timeout = 60.0

    def __init__(
        self,
        *,
        port: int,
        data_dir: Path | str,
        user: str = "polling",
        password: str = "polling",
        database: str = "polling",
    ) -> None:
        super().__init__(port=port, data_dir=data_dir)
        self.user, self.password, self.database = user, password, database
        self.pgdata = self.data_dir / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _bin(self, program: str) -> Path:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ServiceError("PostgreSQL is not installed: run ensure_installed(postgres=True)")
        return bin_dir / program

    def _executable(self) -> Path:
        return self._bin("postgres")

    def _server_account(self) -> pwd.struct_passwd | None:
        """The OS account to run as: PostgreSQL refuses to run as root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError("running as root needs the 'postgres' OS user (from the postgresql package)") from None

    def _popen_kwargs(self) -> dict[str, Any]:
        # Popen(user=...) switches user in the child before exec, so the pid we hold is
        # the postmaster's itself (runuser would sit in between as a parent).
        kwargs: dict[str, Any] = {"cwd": "/", "env": {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}}
        account = self._server_account()
        if account is not None:
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        return kwargs

    def _prepare(self) -> None:
        account = self._server_account()
        if account is not None:
            _grant_search(self.data_dir, account)
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.data_dir / "initdb.pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if account is not None:
            os.chown(self.pgdata, account.pw_uid, account.pw_gid)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            result = subprocess.run(
                [
                    str(self._bin("initdb")),
                    "--pgdata",
                    str(self.pgdata),
                    "--username",
                    self.user,
                    "--pwfile",
                    str(pwfile),
                    "--auth-host",
                    "scram-sha-256",
                    "--auth-local",
                    "peer",
                    "--encoding",
                    "UTF8",
                    "--no-locale",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                **self._popen_kwargs(),
            )
        finally:
            pwfile.unlink()
        if result.returncode != 0:
            raise ServiceError(f"initdb of {self.pgdata} failed:\n{result.stdout}{result.stderr}")

    def _command(self) -> list[str]:
        settings = {**_SETTINGS, "port": str(self.port)}
        argv = [str(self._executable()), "-D", str(self.pgdata)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _probe_ready(self) -> bool:
        result = subprocess.run(
            [str(self._bin("pg_isready")), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        return result.returncode == 0

    def _after_ready(self) -> None:
        # \gexec runs the generated CREATE DATABASE only if the database is missing
        # (CREATE DATABASE has no IF NOT EXISTS); psql's variables quote the names.
        script = (
            "SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec\n"
        )
        result = subprocess.run(
            [
                str(self._bin("psql")),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"db={self.database}",
                "-v",
                f"owner={self.user}",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
            ],
            input=script,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": self.password},
            timeout=60,
        )
        if result.returncode != 0:
            raise ServiceError(f"creating database {self.database!r} failed:\n{result.stdout}{result.stderr}")


def _grant_search(path: Path, account: pwd.struct_passwd) -> None:
    """Make sure ``account`` can reach ``path`` (search permission on every ancestor).

    The server chdirs into its data directory, so every ancestor must be searchable
    by the postgres user. pytest's base temp dir (/tmp/pytest-of-root) is mode 0700,
    for one; adding the search bit (not the read bit: nothing gets listed) is the
    smallest change that lets the server in.
    """
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            directory.chmod(stat.S_IMODE(st.st_mode) | bit)
