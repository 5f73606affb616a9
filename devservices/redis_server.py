"""A Redis server run from Debian's redis-server binary, without persistence."""

from __future__ import annotations

import socket
from pathlib import Path

from ._base import Service, ServiceError
from .install import redis_server_path


class RedisServer(Service):
    """Redis on 127.0.0.1:``port``, working directory ``data_dir``, nothing saved to disk."""

    name = "redis"
    ready_timeout = 30.0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _executable(self) -> Path:
        path = redis_server_path()
        if path is None:
            raise ServiceError("redis-server is not installed: run ensure_installed(redis=True)")
        return path

    def _command(self) -> list[str]:
        return [
            str(self._executable()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",  # stdout, which is our log file
        ]

    def _probe_ready(self) -> bool:
        # An inline PING; a Redis still loading its dataset answers -LOADING instead.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
