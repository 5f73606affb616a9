"""gunicorn's settings for the REST process (polling.wsgi).

    python -m gunicorn -c python:polling.gunicorn_conf -b 0.0.0.0:8001

One process with 64 request threads: a vote's thread waits for Kafka's acknowledgement
without using the CPU, so the threads, not the processes, are what must outnumber the
votes in flight. More processes (about one per core) with WEB_CONCURRENCY, gunicorn's own
variable; any other of gunicorn's settings with GUNICORN_CMD_ARGS (`--threads 32`).
"""

import os

from gunicorn.glogging import Logger

from polling.env import env_bool, env_str
from polling.logging import log_format, logging_config

wsgi_app = "polling.wsgi:application"
worker_class = "gthread"
threads = 64
# An idle client's connection stays open a while (gthread keeps it in its poller, not
# in a thread): longer than the 60 s idle timeout of common load balancers, so the
# balancer, not gunicorn, closes a connection it may be reusing.
keepalive = 75
proc_name = "polling-rest"
# The worker's heartbeat is an fchmod of a temporary file every second, which can block
# on a disk-backed /tmp (a container's overlay): memory-backed /dev/shm when there is one.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# REST_PIN_WORKERS: each worker process runs on one CPU of the set this process may use
# (a container's cpuset, taskset), the least taken by the other workers. A worker's
# Python runs on one core at a time anyway (the GIL); its 64 threads handing the GIL to
# each other across cores cost the framework floor and the votes alike about a third of
# their rate on the benchmark's two cores (README, Performance). Off by default: on a
# host whose cores other processes share, every container's first worker would land on
# the same CPU.
pin_workers = env_bool("REST_PIN_WORKERS", False)


def worker_cpu(allowed: set[int], taken: list[int | None]) -> int:
    """The CPU of `allowed` the fewest running workers are on (the lowest of those); a
    worker in `taken` as None was started unpinned."""
    return min(sorted(allowed), key=taken.count)


def pre_fork(server, worker) -> None:
    # In the arbiter, before the fork: the CPUs of the workers still running decide.
    if pin_workers:
        taken = [getattr(w, "polling_cpu", None) for w in server.WORKERS.values()]
        worker.polling_cpu = worker_cpu(os.sched_getaffinity(0), taken)


def post_fork(server, worker) -> None:
    # In the new worker's only thread: the request threads it starts inherit the mask.
    if pin_workers:
        os.sched_setaffinity(0, {worker.polling_cpu})
        server.log.info("worker %s runs on CPU %d", worker.pid, worker.polling_cpu)



class ErrorOnlyLogger(Logger):
    """gunicorn's logger without its access log: the application writes one JSON line per
    request (logger "polling.access").

    gunicorn counts a logging dict config (below) as an access log, and built every
    request's access fields and record for a logger with no handler: 3.6% of the REST
    process's samples under the vote intake, 6.6% under the framework floor (py-spy,
    GIL only).
    """

    def access(self, resp, req, environ, request_time) -> None:
        return


# gunicorn's own lines (start, stop, worker timeouts) go through the same formatter as
# every other line of the project.
logger_class = ErrorOnlyLogger
accesslog = None
errorlog = "-"
logconfig_dict = logging_config(
    level=env_str("LOG_LEVEL", "INFO"),
    fmt=log_format(debug=env_bool("DEBUG", False)),
    loggers={"gunicorn.error": {"handlers": [], "propagate": True}},
)

# gunicorn's control socket (`gunicornc`) would go to the user's home, which the image's
# user has none of; signals (TERM, HUP, TTIN/TTOU) do what operators need.
control_socket_disable = True
