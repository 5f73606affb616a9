"""The production server: uvicorn serving polling.asgi, HTTP and WebSockets on one port.

    python -m polling.serve                          # 0.0.0.0:8000, WEB_CONCURRENCY processes
    python -m polling.serve --port 8080 --workers 2

Votes take their lean path on uvicorn's event loop (polls.api.vote_intake), every other
request goes to Django, and WebSockets to the realtime app, whose fan-out writes frames
to uvicorn's sockets (polling.patches.uvicorn_websockets). The options are fixed here so that every place
that runs the server (the image, compose, make, the tests, the bench) runs the same one.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

APPLICATION = "polling.asgi:application"


def server_options() -> dict[str, Any]:
    """uvicorn.run's keyword arguments, apart from where it listens and how many processes."""
    from polling.env import env_bool, env_float, env_str
    from polling.logging import log_format, logging_config

    trusted_proxies = env_str("FORWARDED_ALLOW_IPS", "")
    return {
        "loop": "uvloop",
        "http": "httptools",
        # The sans-I/O protocol exposes the transport the fan-out writes frames to;
        # broadcasts are small JSON, not worth deflating once per viewer.
        "ws": "websockets-sansio",
        "ws_per_message_deflate": False,
        "lifespan": "off",
        # The application writes one JSON line per request (logger "polling.access").
        "access_log": False,
        "server_header": False,
        # The client's address (rate limits, anonymous ballots) and scheme from
        # X-Forwarded-For and -Proto, only when the connection comes from a proxy listed
        # here (a front door); with none listed, the peer is the client.
        "proxy_headers": bool(trusted_proxies),
        "forwarded_allow_ips": trusted_proxies or None,
        # Longer than the 60 s idle timeout of common load balancers, so the balancer, not
        # the server, closes a connection it may be reusing.
        "timeout_keep_alive": 75,
        # On SIGTERM: stop accepting, let requests in flight finish up to this long.
        "timeout_graceful_shutdown": env_float("WEB_SHUTDOWN_TIMEOUT", 30.0, minimum=1.0),
        # uvicorn's own lines (start, stop, errors) through the project's formatter.
        "log_config": logging_config(
            level=env_str("LOG_LEVEL", "INFO"),
            fmt=log_format(debug=env_bool("DEBUG", False)),
            loggers={
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                "uvicorn.access": {"handlers": [], "propagate": False},
            },
        ),
    }


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m polling.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fd", type=int, help="serve on this already bound socket instead")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "1")),
        help="server processes on the one socket (default: WEB_CONCURRENCY, else 1)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = command_line().parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "polling.settings")

    import uvicorn

    if args.fd is None:
        uvicorn.run(APPLICATION, host=args.host, port=args.port, workers=args.workers, **server_options())
        return
    # uvicorn takes a socket given by number for a Unix one, and then leaves Nagle's
    # algorithm on for TCP connections: an answer written in two parts waited for the
    # client's delayed ACK. The socket of its real family avoids that.
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(APPLICATION, workers=args.workers, **server_options())
    sockets = [inherited_socket(args.fd)]
    if args.workers > 1:
        Multiprocess(config, sockets=sockets).run()
    else:
        uvicorn.Server(config).run(sockets=sockets)


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket a supervisor passed by number, of its real family."""
    return socket.socket(fileno=fd)


if __name__ == "__main__":
    sys.exit(main())
