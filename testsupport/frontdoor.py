"""The scale-out shape on one machine: server processes behind Debian's nginx.

FrontDoor runs nginx with deploy/nginx/polling.conf.template, the very file the compose
front door renders, filled in as nginx's image does (only the template's own ${NAMES}
are replaced; nginx's $variables stay).
"""

from __future__ import annotations

import os
import pwd
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from devservices import free_port
from devservices.install import nginx_path
from testsupport.processes import REPO, ManagedProcess, WebServer

TEMPLATE = REPO / "deploy" / "nginx" / "polling.conf.template"

# Which server answered each request: "<method> <uri> <status> <upstream address>".
_ACCESS_FORMAT = "'$request_method $uri $status $upstream_addr'"


def render_template(text: str, values: Mapping[str, str]) -> str:
    """envsubst restricted to ``values``' names, as nginx's image runs it on templates."""
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", lambda m: values.get(m[1], m[0]), text)


class ProxiedWebServer(WebServer):
    """A WebServer that takes the client's address from the front door's X-Forwarded-For."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, port: int | None = None) -> None:
        super().__init__(env={**env, "FORWARDED_ALLOW_IPS": "127.0.0.1"}, log_dir=log_dir, port=port)


class FrontDoor(WebServer):
    """nginx on 127.0.0.1:``port`` routing /ws to ``ws`` servers and the rest to ``http``.

    A WebServer to its users (``url``, and ``start()`` returns once the API answers
    through it), whose process is nginx.
    """

    def __init__(
        self, *, http: Sequence[WebServer], ws: Sequence[WebServer], log_dir: Path, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.directory = log_dir / f"frontdoor-{self.port}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.access_log = self.directory / "access.log"
        site = render_template(
            TEMPLATE.read_text(),
            {
                "POLLING_FRONT_DOOR_PORT": f"127.0.0.1:{self.port}",
                "POLLING_HTTP_SERVERS": " ".join(f"server 127.0.0.1:{s.port};" for s in http),
                "POLLING_WS_SERVERS": " ".join(f"server 127.0.0.1:{s.port};" for s in ws),
            },
        )
        (self.directory / "polling.conf").write_text(site)
        # One worker process: round robin over the servers is then exact, connection by connection.
        (self.directory / "nginx.conf").write_text(
            f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"
            "worker_processes 1;\n"
            "daemon off;\n"
            f"pid {self.directory}/nginx.pid;\n"
            f"error_log {self.directory}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"    log_format upstreams {_ACCESS_FORMAT};\n"
            f"    access_log {self.access_log} upstreams;\n"
            + "".join(
                f"    {kind}_temp_path {self.directory}/{kind}-temp;\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + f"    include {self.directory}/polling.conf;\n"
            "}\n"
        )
        nginx = nginx_path()
        if nginx is None:
            raise AssertionError("nginx is not installed: run python -m devservices install")
        ManagedProcess.__init__(
            self,
            name=f"frontdoor-{self.port}",
            args=[
                str(nginx),
                "-e",
                str(self.directory / "error.log"),
                "-p",
                str(self.directory),
                "-c",
                str(self.directory / "nginx.conf"),
            ],
            env=dict(os.environ),
            log_dir=log_dir,
        )

    def upstreams(self, path_prefix: str = "/") -> Counter[str]:
        """How many logged requests under ``path_prefix`` each server answered
        (a WebSocket is logged when it closes)."""
        counts: Counter[str] = Counter()
        text = self.access_log.read_text() if self.access_log.exists() else ""
        for line in text.splitlines():
            _method, uri, _status, upstream = line.split(" ", 3)
            if uri.startswith(path_prefix):
                counts[upstream] += 1
        return counts
