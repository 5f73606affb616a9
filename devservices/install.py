"""Installing what the servers need: Debian packages, Kafka's jars from Maven Central, and
axe-core from npm for the browser tests."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from ._base import ServiceError, services_dir

KAFKA_VERSION = "4.1.1"  # KRaft broker (KafkaServer)
KAFKA_ZK_VERSION = "3.9.1"  # last line with ZooKeeper (KafkaZooKeeperServer)

_POM_DIR = Path(__file__).resolve().parent / "kafka"
_MAVEN_COPY = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"

# axe-core, pinned by testsupport/axe/package-lock.json: the browser tests inject it from disk.
_AXE_DIR = Path(__file__).resolve().parent.parent / "testsupport" / "axe"

_apt_updated = False


def postgres_bin_dir() -> Path | None:
    """The newest installed /usr/lib/postgresql/<major>/bin that has a server, if any."""
    candidates = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "postgres").is_file()]
    return max(candidates, key=lambda d: int(d.parent.name), default=None)


def redis_server_path() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


def nginx_path() -> Path | None:
    """Debian's nginx (in /usr/sbin, which a non-root PATH may lack)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    return Path(found) if found else None


def ensure_installed(
    postgres: bool = True,
    redis: bool = True,
    kafka: bool = True,
    kafka_versions: Iterable[str] = (KAFKA_VERSION,),
    browser: bool = False,
    proxy: bool = False,
) -> None:
    """Install whatever is missing; fast (no network) when everything is there.

    `browser` adds Debian's Chromium, which the browser tests drive (test tools may
    not download browsers of their own here), and axe-core, which they inject.
    `proxy` adds Debian's nginx, the front door of the scale-out test (deploy/nginx).
    """
    packages: list[str] = []
    if postgres and postgres_bin_dir() is None:
        packages.append("postgresql")
    if redis and redis_server_path() is None:
        packages.append("redis-server")
    if kafka and shutil.which("java") is None:
        packages.append("default-jre-headless")
    if kafka and shutil.which("mvn") is None:
        packages.append("maven")
    if browser and shutil.which("chromium") is None:
        packages.append("chromium")
    if browser and shutil.which("npm") is None:
        packages.append("npm")
    if proxy and nginx_path() is None:
        packages.append("nginx")
    if packages:
        _apt_install(packages)
    if browser:
        ensure_axe_core()
    if kafka:
        for version in kafka_versions:
            ensure_kafka_jars(version)


def _apt_install(packages: list[str]) -> None:
    global _apt_updated
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]
    else:
        raise ServiceError(
            f"devservices needs the Debian packages {' '.join(packages)}: "
            "run as root or install sudo (or install them yourself)"
        )
    # Wait for a concurrent apt/dpkg (e.g. unattended upgrades) instead of failing.
    apt = [*prefix, "apt-get", "-o", "DPkg::Lock::Timeout=900"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"devservices: apt-get install {' '.join(packages)} ...", file=sys.stderr, flush=True)
    steps = [] if _apt_updated else [[*apt, "update"]]
    steps.append([*apt, "install", "-y", "--no-install-recommends", *packages])
    for argv in steps:
        _run(argv, env=env, what=" ".join(argv))
    _apt_updated = True


def axe_core_path() -> Path:
    """axe-core's script, as the browser tests inject it into a page."""
    return _AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


def ensure_axe_core() -> Path:
    """axe-core installed by `npm ci` from its lock file into testsupport/axe/node_modules."""
    script = axe_core_path()
    if script.exists():
        return script
    if shutil.which("npm") is None:
        raise ServiceError("axe-core needs npm: run ensure_installed(browser=True)")
    print("devservices: npm ci of axe-core ...", file=sys.stderr, flush=True)
    _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=_AXE_DIR, what="npm ci of axe-core")
    return script


def ensure_kafka_jars(version: str) -> Path:
    """``<repo>/.services/kafka-<version>/libs`` with the broker's full classpath.

    The COMPLETE marker is written only after Maven succeeded, so an interrupted
    download is redone from scratch; a file lock serialises concurrent callers
    (parallel test workers).
    """
    home = services_dir() / f"kafka-{version}"
    home.mkdir(exist_ok=True)
    libs, marker = home / "libs", home / "COMPLETE"
    if marker.exists():
        return libs
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():  # another process finished it while we waited
            return libs
        if shutil.which("mvn") is None or shutil.which("java") is None:
            raise ServiceError("Kafka needs java and mvn: run ensure_installed(kafka=True)")
        shutil.rmtree(libs, ignore_errors=True)
        pom = _POM_DIR / ("pom-3.9.xml" if version.startswith("3.") else "pom-4.xml")
        print(f"devservices: fetching Kafka {version} jars ...", file=sys.stderr, flush=True)
        _run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(pom),
                _MAVEN_COPY,
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
                f"-Dkafka.version={version}",
            ],
            cwd=home,
            what=f"Maven download of Kafka {version} (is that version on Maven Central?)",
        )
        marker.write_text(f"{version}\n")
    return libs


def _run(argv: list[str], *, what: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    """Run a command, raising ServiceError with the end of its output if it fails."""
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, cwd=cwd)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise ServiceError(f"{what} failed with exit code {result.returncode}:\n{output}")
