"""The Dockerfile and the compose files, checked against the code they deploy.

No Docker engine runs here, so these files are parsed instead and every name in them
that the code also knows is cross-checked: environment variables against what the
settings read and .env.example, service names and ports against the URLs in that
environment, commands against the management commands and the ASGI module, health
check paths against the urlconf, copied packages against INSTALLED_APPS, imports
against the pinned requirements. The settings are loaded in a clean process with
exactly the environment a compose service gets, in production mode.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import io
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command, get_commands, load_command_class
from django.urls import resolve

from devservices import free_port
from polling.settings_doc import Variable, listed_in_env_example, variables_read
from testsupport.processes import WebServer, WorkerProcess, child_pids

REPO = Path(__file__).resolve().parent.parent
ZOOKEEPER_OVERRIDE = "docker-compose.zookeeper.yml"
CLUSTER_OVERRIDE = "docker-compose.cluster.yml"
# Each system a user runs, by the compose files given to `docker compose -f ... -f ...`.
COMPOSE_SHAPES = {
    "docker-compose.yml": ("docker-compose.yml",),
    ZOOKEEPER_OVERRIDE: ("docker-compose.yml", ZOOKEEPER_OVERRIDE),
}
APP_SERVICES = ("migrate", "web", "worker")
# The project's own Python packages (what the image must contain, and what is not a
# third-party import).
PROJECT_PACKAGES = ("polling", "polls", "leaderboard", "realtime")


# --- Parsing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tagged:
    """A value under compose's `!override` (replaces the base's) or `!reset` (removes it)."""

    tag: str
    value: object


class _ComposeLoader(yaml.SafeLoader):
    pass


def _construct_tagged(loader: yaml.SafeLoader, node: yaml.Node) -> _Tagged:
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return _Tagged(node.tag, value)


for _tag in ("!override", "!reset"):
    _ComposeLoader.add_constructor(_tag, _construct_tagged)


def load_compose(name: str) -> dict:
    return yaml.load((REPO / name).read_text(), Loader=_ComposeLoader)  # a SafeLoader


def merge_compose(base, override):
    """What `docker compose -f base -f override` runs: mappings merged key by key, lists
    of volumes, ports and exposed ports joined, anything else replaced by the override;
    `!override` replaces a value whole and `!reset` removes it."""
    if isinstance(override, _Tagged):
        return _untagged(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, _Tagged) and value.tag == "!reset":
                merged.pop(key, None)
            elif key in merged and key in ("volumes", "ports", "expose") and isinstance(value, list):
                merged[key] = [*merged[key], *(item for item in value if item not in merged[key])]
            else:
                merged[key] = merge_compose(merged[key], value) if key in merged else _untagged(value)
        return merged
    return override


def _untagged(value):
    if isinstance(value, _Tagged):
        return _untagged(value.value)
    if isinstance(value, dict):
        return {key: _untagged(item) for key, item in value.items()}
    return value


def merged_compose(*names: str) -> dict:
    """The files merged in order, as compose merges its -f files."""
    spec = load_compose(names[0])
    for name in names[1:]:
        spec = merge_compose(spec, load_compose(name))
    return spec


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value, given: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, with `given` as the shell's variables."""
    given = given or {}

    def substitute(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if given.get(name):
            return given[name]
        if op and op.endswith("?"):
            raise LookupError(f"{name} is required: {arg}")
        return arg if op and op.endswith("-") else ""

    return _INTERPOLATION.sub(substitute, str(value)).replace("$$", "$")


def interpolation_names(value) -> set[str]:
    return {match["name"] for match in _INTERPOLATION.finditer(str(value))}


def service_env(service: dict, given: dict[str, str] | None = None) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: interpolate(value, given) for key, value in environment.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile(instruction: str) -> list[str]:
    return [arguments for name, arguments in dockerfile_instructions() if name == instruction]


def dockerfile_cmd() -> list[str]:
    (cmd,) = dockerfile("CMD")
    return json.loads(cmd)


def project_env_names() -> dict[str, Variable]:
    return variables_read(REPO)


def env_example_names() -> set[str]:
    return set(listed_in_env_example(REPO / ".env.example"))


# --- Settings and .env.example --------------------------------------------------------------


def test_every_variable_the_code_reads_is_listed_in_env_example():
    read = set(project_env_names())
    assert "SECRET_KEY" in read and "KAFKA_BROKERS" in read  # the scan works
    missing = sorted(read - env_example_names())
    assert not missing, f".env.example does not list {missing}"


def test_env_example_lists_only_variables_the_code_reads():
    stale = sorted(env_example_names() - set(project_env_names()))
    assert not stale, f".env.example lists variables nothing reads: {stale}"


def test_env_example_itself_loads_in_production_mode():
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (REPO / ".env.example").read_text(), flags=re.MULTILINE))
    values["SECRET_KEY"] = "a-real-secret-for-this-check-only-0123456789abcdef"
    loaded = load_settings(values)
    assert loaded["DEBUG"] is False
    assert loaded["LOG_FORMAT"] == "json"


# --- Compose ----------------------------------------------------------------------------------


@pytest.fixture(params=COMPOSE_SHAPES)
def compose(request):
    return request.param, merged_compose(*COMPOSE_SHAPES[request.param])


def test_compose_has_the_whole_system_with_dependencies_that_exist(compose):
    name, spec = compose
    services = spec["services"]
    expected = {"postgres", "redis", "kafka", *APP_SERVICES} | ({"zookeeper"} if "zookeeper" in name else set())
    assert set(services) == expected
    declared_volumes = set(spec.get("volumes") or {})
    for service_name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{service_name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{service_name} uses undeclared volume {source}"
    assert services["postgres"]["volumes"] and services["kafka"]["volumes"]
    for app in ("web", "worker"):
        assert services[app]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[app]["depends_on"]["kafka"] == {"condition": "service_healthy"}
        assert services[app].get("init") is True
    assert services["migrate"]["restart"] == "no"
    assert all("healthcheck" in services[app] for app in ("web", "worker"))


def test_compose_images_are_pinned(compose):
    _, spec = compose
    for service_name, service in spec["services"].items():
        if "build" in service:
            continue  # our own image
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{service_name} image {image} is not pinned"


def test_the_kraft_file_runs_kafka_4_without_zookeeper():
    kafka = load_compose("docker-compose.yml")["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = service_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env


def test_the_zookeeper_file_runs_kafka_3_9_registered_in_zookeeper():
    services = merged_compose(*COMPOSE_SHAPES[ZOOKEEPER_OVERRIDE])["services"]
    kafka, zookeeper = services["kafka"], services["zookeeper"]
    # Confluent Platform 7.9.x is Apache Kafka 3.9.x.
    assert re.fullmatch(r"confluentinc/cp-kafka:7\.9\.\d+", kafka["image"])
    assert zookeeper["image"].split(":")[1] == kafka["image"].split(":")[1]
    env = service_env(kafka)
    zk_port = service_env(zookeeper)["ZOOKEEPER_CLIENT_PORT"]
    assert env["KAFKA_ZOOKEEPER_CONNECT"] == f"zookeeper:{zk_port}"
    assert "KAFKA_PROCESS_ROLES" not in env
    assert kafka["depends_on"]["zookeeper"] == {"condition": "service_healthy"}
    assert f"/dev/tcp/127.0.0.1/{zk_port}" in " ".join(zookeeper["healthcheck"]["test"])


def test_the_zookeeper_override_holds_only_the_broker_and_leaves_nothing_of_kraft():
    base, override = load_compose("docker-compose.yml"), load_compose(ZOOKEEPER_OVERRIDE)
    merged = merged_compose(*COMPOSE_SHAPES[ZOOKEEPER_OVERRIDE])
    assert set(override["services"]) == {"zookeeper", "kafka"}, "the override repeats services of the base"
    for service in ("postgres", "redis", *APP_SERVICES):
        assert merged["services"][service] == base["services"][service], f"{service} differs from the base"
    assert override.get("name"), "the ZooKeeper variant needs a project name of its own (separate volumes)"
    kraft_only = {
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
    }
    assert not kraft_only & set(service_env(merged["services"]["kafka"])), "KRaft settings left on the 3.9 broker"
    assert {"zookeeper-data", "zookeeper-log", *base["volumes"]} <= set(merged["volumes"])


def test_compose_app_environment_names_only_settings_the_code_reads(compose):
    _, spec = compose
    read = set(project_env_names())
    for app in APP_SERVICES:
        service = spec["services"][app]
        unknown = sorted(set(service.get("environment") or {}) - read)
        assert not unknown, f"{app} sets variables nothing reads: {unknown}"
        # The ${VARS} a user may set from the shell are settings too.
        used = set().union(*(interpolation_names(value) for value in (service.get("environment") or {}).values()))
        assert used <= read, sorted(used - read)


def load_settings(environment: dict[str, str]) -> dict:
    """Import the settings in a clean process with exactly this environment; some values back."""
    script = (
        "import json, django\n"
        "from django.conf import settings as s\n"
        "django.setup()\n"
        "db = s.DATABASES['default']\n"
        "print(json.dumps({'DEBUG': s.DEBUG, 'ENGINE': db['ENGINE'], 'DB_HOST': db.get('HOST'),"
        " 'DB_PORT': db.get('PORT'), 'DB_NAME': db['NAME'], 'DB_USER': db.get('USER'),"
        " 'DB_PASSWORD': db.get('PASSWORD'), 'KAFKA_BROKERS': s.KAFKA_BROKERS, 'REDIS_URL': s.REDIS_URL,"
        " 'ALLOWED_HOSTS': s.ALLOWED_HOSTS, 'WORKER_METRICS_PORT': s.WORKER_METRICS_PORT,"
        " 'LOG_FORMAT': s.LOG_FORMAT, 'MIDDLEWARE': s.MIDDLEWARE}, default=str))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "polling.settings", **environment}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"the settings refuse this environment:\n{result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_settings_load_in_production_mode_with_exactly_the_compose_environment(compose):
    name, spec = compose
    services = spec["services"]
    with pytest.raises(LookupError, match="SECRET_KEY"):
        service_env(services["web"])  # compose refuses to start without it, as it should
    shell = {"SECRET_KEY": "a-real-secret-for-this-check-only-0123456789abcdef"}
    for app in APP_SERVICES:
        loaded = load_settings(service_env(services[app], shell))
        assert loaded["DEBUG"] is False
        assert loaded["LOG_FORMAT"] == "json"

        # The database URL names the postgres service with its own credentials.
        postgres = service_env(services["postgres"])
        assert loaded["ENGINE"] == "django.db.backends.postgresql"
        assert loaded["DB_HOST"] in services and "postgres" in services[loaded["DB_HOST"]]["image"]
        assert int(loaded["DB_PORT"]) == 5432
        assert (loaded["DB_NAME"], loaded["DB_USER"], loaded["DB_PASSWORD"]) == (
            postgres["POSTGRES_DB"],
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        )

        # Kafka: every bootstrap address is a listener the broker advertises.
        advertised = service_env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
        advertised_addresses = {urlsplit(listener).netloc for listener in advertised.split(",")}
        for broker in loaded["KAFKA_BROKERS"]:
            assert broker in advertised_addresses, f"{app}: {broker} is not among {advertised_addresses}"
            assert broker.split(":")[0] in services

        redis = urlsplit(loaded["REDIS_URL"])
        assert redis.hostname in services and "redis" in services[redis.hostname]["image"]
        assert redis.port == 6379

        assert "polling.health.ProbeMiddleware" in loaded["MIDDLEWARE"]


# --- Commands, ports and health checks -------------------------------------------------------


def check_command(argv: list[str]) -> dict:
    """Parse a container command the way its program will; return what it names."""
    assert argv[0] == "python", argv
    if argv[1:3] == ["-m", "polling.serve"]:
        from polling.serve import APPLICATION, command_line, server_options

        args = command_line().parse_args(argv[3:])
        module_name, attribute = APPLICATION.split(":")
        assert callable(getattr(importlib.import_module(module_name), attribute)), APPLICATION
        assert args.host == "0.0.0.0", "in a container the server must listen on every interface"
        assert server_options()["access_log"] is False, (
            "uvicorn's plain-text access log would break the JSON log stream"
        )
        return {"role": "web", "port": args.port}
    assert argv[1] == "manage.py" and (REPO / "manage.py").exists()
    name = argv[2]
    commands = get_commands()
    assert name in commands, f"manage.py has no command {name}"
    load_command_class(commands[name], name).create_parser("manage.py", name).parse_args(argv[3:])
    return {"role": name}


def test_the_image_runs_the_asgi_application_and_compose_runs_real_commands(compose):
    _, spec = compose
    default = check_command(dockerfile_cmd())
    assert default["role"] == "web"
    services = spec["services"]
    assert services["web"]["command"] == dockerfile_cmd()
    assert check_command(services["migrate"]["command"])["role"] == "migrate"
    assert check_command(services["worker"]["command"])["role"] == "consume_votes"
    command = check_command(services["web"]["command"])
    assert f"{command['port']}:{command['port']}" in services["web"]["ports"]
    assert str(command["port"]) in dockerfile("EXPOSE")[0].split()
    # The Dockerfile's list of roles names the web command as compose runs it.
    assert shlex.join(services["web"]["command"]) in (REPO / "Dockerfile").read_text()


def healthcheck_url(service: dict) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    compile(test[3], "healthcheck", "exec")  # at least valid Python
    (url,) = re.findall(r"'(http://[^']+)'", test[3])
    return url


def test_health_checks_probe_endpoints_the_urlconf_serves(compose):
    _, spec = compose
    services = spec["services"]
    # Answered before the Host check, so the probe works whatever ALLOWED_HOSTS says.
    from polling.health import PROBE_PATHS

    url = urlsplit(healthcheck_url(services["web"]))
    assert url.port == check_command(services["web"]["command"])["port"]
    assert resolve(url.path).url_name in ("healthz", "readyz")
    assert url.path in PROBE_PATHS

    worker_url = urlsplit(healthcheck_url(services["worker"]))
    worker_env = service_env(services["worker"], {"SECRET_KEY": "any"})
    worker_port = int(worker_env["WORKER_METRICS_PORT"])
    assert worker_url.port == worker_port and worker_url.path == "/metrics"
    assert str(worker_port) in services["worker"]["expose"]
    assert str(worker_port) in dockerfile("EXPOSE")[0].split()


# --- Dockerfile ----------------------------------------------------------------------------------


def test_the_image_is_slim_non_root_and_on_the_projects_python():
    (base,) = dockerfile("FROM")
    assert re.fullmatch(r"python:(\d+\.\d+)[\w.-]*-slim(-\w+)?", base), base
    assert base.split(":")[1].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    instructions = dockerfile_instructions()
    users = [(i, arguments) for i, (name, arguments) in enumerate(instructions) if name == "USER"]
    assert users, "the image runs as root"
    last_user_at, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert all(name != "RUN" for name, _ in instructions[last_user_at:]), "RUN after USER runs as that user"


def test_the_image_contains_every_package_the_project_needs():
    copied = {arguments.split()[0].rstrip("/") for arguments in dockerfile("COPY")}
    needed = {"manage.py", "requirements.txt"}
    for dotted in (*settings.INSTALLED_APPS, settings.ROOT_URLCONF, settings.ASGI_APPLICATION):
        top = dotted.split(".")[0]
        if (REPO / top).is_dir():
            needed.add(top)
    missing = sorted(needed - copied)
    assert not missing, f"the Dockerfile does not COPY {missing}"
    assert any("pip install -r requirements.txt" in run for run in dockerfile("RUN"))
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored, "secrets and history must stay out of the build context"


# --- Requirements -----------------------------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            pins.update(_pins(path.parent / line.split()[1]))
        elif "==" in line:
            name, version = line.split("==")
            pins[_normalize(name)] = version.strip()
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().split("[")[0]


def _third_party_imports(paths) -> set[str]:
    modules = set()
    local = {*PROJECT_PACKAGES, "devservices", "testsupport", "tests", "conftest", "bench"}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in local and m != "__future__"}


def _distributions(modules: set[str]) -> dict[str, str]:
    mapping = importlib.metadata.packages_distributions()
    found = {}
    for module in modules:
        dists = mapping.get(module)
        assert dists, f"{module} is imported but not installed"
        found[module] = _normalize(dists[0])
    return found


def _app_code() -> list[Path]:
    return [
        path for package in PROJECT_PACKAGES for path in (REPO / package).rglob("*.py") if "tests" not in path.parts
    ]


def _test_code() -> list[Path]:
    paths = [REPO / "conftest.py", *(REPO / "testsupport").rglob("*.py"), *(REPO / "tests").rglob("*.py")]
    paths += [path for package in PROJECT_PACKAGES for path in (REPO / package).rglob("tests/*.py")]
    return paths


def test_every_runtime_import_is_pinned_in_requirements_txt_at_the_installed_version():
    modules = _third_party_imports(_app_code()) | {
        app.split(".")[0] for app in settings.INSTALLED_APPS if not app.startswith("django.")
    } - set(PROJECT_PACKAGES)
    pins = _pins(REPO / "requirements.txt")
    problems = []
    for module, dist in sorted(_distributions(modules - set(PROJECT_PACKAGES)).items()):
        if dist not in pins:
            problems.append(f"{dist} (imported as {module}) is not pinned in requirements.txt")
        elif pins[dist] != importlib.metadata.version(dist):
            problems.append(f"{dist}=={pins[dist]} pinned but {importlib.metadata.version(dist)} installed")
    assert not problems, "\n".join(problems)


def _installed_with(pins: dict[str, str]) -> set[str]:
    """The pinned distributions and everything they require, transitively."""
    seen: set[str] = set()
    todo = list(pins)
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requirements = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            if "extra ==" not in requirement:
                todo.append(_normalize(re.match(r"[A-Za-z0-9._-]+", requirement)[0]))
    return seen


def test_every_test_import_is_installed_by_requirements_dev_txt():
    """Test code may lean on what the pinned packages bring along (asgiref with Django)."""
    installed = _installed_with(_pins(REPO / "requirements-dev.txt"))
    missing = sorted(
        f"{dist} (imported as {module})"
        for module, dist in _distributions(_third_party_imports(_test_code())).items()
        if dist not in installed
    )
    assert not missing, f"not pinned in requirements-dev.txt: {missing}"


def test_the_makefile_serves_the_same_application_as_the_image():
    makefile = (REPO / "Makefile").read_text()
    commands = [
        shlex.split(line.split("$(BIN)/python", 1)[1])
        for line in makefile.splitlines()
        if "-m polling.serve" in line and "$(BIN)/python" in line
    ]
    assert len(commands) == 2  # make run and make web
    for argv in commands:
        assert argv[:2] == dockerfile_cmd()[1:3]


# --- The image's commands, run for real ---------------------------------------------------------


def image_web_server(env: dict[str, str], log_dir: Path) -> WebServer:
    """The server started with the Dockerfile's CMD, on a free port of 127.0.0.1."""
    port = free_port()
    server = WebServer(env=env, log_dir=log_dir, port=port)
    replace = {"python": sys.executable, "8000": str(port)}
    server.args = [replace.get(arg, arg) for arg in dockerfile_cmd()] + ["--host", "127.0.0.1"]
    return server


def compose_web_server(env: dict[str, str], log_dir: Path) -> WebServer:
    """The server started with the compose file's web command and environment (its
    processes), on a free port of 127.0.0.1."""
    port = free_port()
    web = load_compose("docker-compose.yml")["services"]["web"]
    server = WebServer(
        env={**env, "WEB_CONCURRENCY": web["environment"]["WEB_CONCURRENCY"]}, log_dir=log_dir, port=port
    )
    replace = {"python": sys.executable, "8000": str(port)}
    server.args = [replace.get(arg, arg) for arg in web["command"]] + ["--host", "127.0.0.1"]
    return server


@pytest.mark.django_db(transaction=True)
def test_the_image_and_compose_commands_run_and_pass_the_compose_health_checks(process_env, tmp_path):
    services = load_compose("docker-compose.yml")["services"]
    # Readiness here is about the command and the path; slack for a loaded machine.
    web = image_web_server({**process_env, "READYZ_TIMEOUT": "3"}, tmp_path)
    compose_web = compose_web_server({**process_env, "READYZ_TIMEOUT": "3"}, tmp_path)
    metrics_port = free_port()
    worker = WorkerProcess(
        env={**process_env, "WORKER_METRICS_PORT": str(metrics_port)},
        log_dir=tmp_path,
        group=process_env["KAFKA_CONSUMER_GROUP"],
    )
    # The compose worker command as is; the group and metrics port come from the environment.
    worker.args = [sys.executable if arg == "python" else arg for arg in services["worker"]["command"]]
    worker_url = healthcheck_url(services["worker"])
    web.start()
    compose_web.start()
    worker.start()
    try:
        probe = services["web"]["healthcheck"]["test"][3]
        web_probes = [probe.replace(":8000/", f":{server.port}/") for server in (web, compose_web)]
        worker_probe = services["worker"]["healthcheck"]["test"][3].replace(
            f":{urlsplit(worker_url).port}/", f":{metrics_port}/"
        )
        for probe in (*web_probes, worker_probe):
            result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
        # The compose command runs WEB_CONCURRENCY server processes under uvicorn's supervisor.
        assert len(child_pids(compose_web.process.pid)) >= 2, compose_web.log()[-3000:]
    finally:
        web.kill()
        compose_web.kill()
        worker.kill()


# --- Migrations ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migrations_cover_every_model_change():
    """`manage.py migrate` is all a deployment runs: a model change without its migration
    (an index, say) would never reach the database."""
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit:
        pytest.fail(f"models changed without a migration:\n{out.getvalue()}")


# --- The cluster override: three brokers, scaled processes, one front door ------------------

BROKERS = ("kafka", "kafka-2", "kafka-3")


@pytest.fixture
def cluster_compose():
    return merged_compose("docker-compose.yml", CLUSTER_OVERRIDE)


def running_services(spec: dict) -> dict[str, dict]:
    """The services `up` starts without a --profile."""
    return {name: service for name, service in spec["services"].items() if not service.get("profiles")}


def test_the_cluster_override_runs_three_kraft_brokers_with_replicated_topics(cluster_compose):
    services = cluster_compose["services"]
    envs = [service_env(services[name]) for name in BROKERS]
    assert {services[name]["image"] for name in BROKERS} == {services["kafka"]["image"]}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in envs) == [1, 2, 3]
    controller_port = urlsplit(
        next(item for item in envs[0]["KAFKA_LISTENERS"].split(",") if item.startswith("CONTROLLER"))
    ).port
    voters = {f"{env['KAFKA_NODE_ID']}@{name}:{controller_port}" for name, env in zip(BROKERS, envs)}
    for name, env in zip(BROKERS, envs):
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["CLUSTER_ID"] == envs[0]["CLUSTER_ID"]
        for setting in (
            "DEFAULT_REPLICATION_FACTOR",
            "OFFSETS_TOPIC_REPLICATION_FACTOR",
            "TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        ):
            assert env[f"KAFKA_{setting}"] == "3", (name, setting)
        for setting in (
            "MIN_INSYNC_REPLICAS",
            "TRANSACTION_STATE_LOG_MIN_ISR",
            "SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
        ):
            assert env[f"KAFKA_{setting}"] == "2", (name, setting)
        assert "healthcheck" in services[name]
    # Each broker keeps its log in a volume of its own.
    data = [
        next(v.split(":")[0] for v in services[name]["volumes"] if v.endswith(":/var/lib/kafka/data"))
        for name in BROKERS
    ]
    assert len(set(data)) == 3 and set(data) <= set(cluster_compose["volumes"])


def test_the_cluster_override_app_services_load_and_bootstrap_from_every_broker(cluster_compose):
    services = running_services(cluster_compose)
    read = set(project_env_names())
    shell = {"SECRET_KEY": "a-real-secret-for-this-check-only-0123456789abcdef"}
    advertised = {urlsplit(service_env(services[name])["KAFKA_ADVERTISED_LISTENERS"]).netloc for name in BROKERS}
    for app in ("migrate", "http", "ws", "worker"):
        assert set(services[app].get("environment") or {}) <= read, app
        loaded = load_settings(service_env(services[app], shell))
        assert loaded["DEBUG"] is False
        assert set(loaded["KAFKA_BROKERS"]) == advertised, app
        assert urlsplit(loaded["REDIS_URL"]).hostname in services
        assert loaded["DB_HOST"] in services
    # The processes that publish or consume wait for every broker.
    for app in ("http", "ws", "worker"):
        assert {name: {"condition": "service_healthy"} for name in BROKERS}.items() <= services[app][
            "depends_on"
        ].items()


def test_the_cluster_override_scales_the_processes_behind_one_front_door(cluster_compose):
    from testsupport.frontdoor import TEMPLATE

    spec = cluster_compose
    services = running_services(spec)
    assert "web" not in services, "the single-box server starts only with --profile single"
    for service_name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{service_name} depends on {dependency}, which does not start"
        if "build" not in service and service_name not in APP_SERVICES + ("http", "ws"):
            assert ":" in service["image"] and not service["image"].endswith(":latest"), service_name
    assert services["http"]["deploy"]["replicas"] >= 2 and services["ws"]["deploy"]["replicas"] >= 2
    partitions = int(service_env(services["worker"], {"SECRET_KEY": "any"})["KAFKA_TOPIC_PARTITIONS"])
    assert 3 <= services["worker"]["deploy"]["replicas"] <= partitions
    assert check_command(services["worker"]["command"])["role"] == "consume_votes"
    ports = {}
    for app in ("http", "ws"):
        command = services[app]["command"]
        ports[app] = check_command(command)["port"]
        assert service_env(services[app], {"SECRET_KEY": "any"}).get("FORWARDED_ALLOW_IPS"), (
            f"{app} must take the client's address from the front door"
        )
        assert not services[app].get("ports"), f"{app} is reached through the front door only"
        assert urlsplit(healthcheck_url(services[app])).port == ports[app]

    front = services["frontdoor"]
    assert front["image"].startswith("nginx:")
    # The front door renders the very template the scale-out test runs nginx with.
    (mount,) = front["volumes"]
    source, target = mount.split(":")[:2]
    assert (REPO / source).resolve() == TEMPLATE
    assert target == f"/etc/nginx/templates/{TEMPLATE.name}"
    env = service_env(front)
    assert set(env) == interpolation_names(TEMPLATE.read_text())
    assert re.fullmatch(r"(server http:\d+;\s*)+", env["POLLING_HTTP_SERVERS"])
    assert env["POLLING_HTTP_SERVERS"] == f"server http:{ports['http']};"
    assert env["POLLING_WS_SERVERS"] == f"server ws:{ports['ws']};"
    (published,) = front["ports"]
    assert published.split(":")[1] == env["POLLING_FRONT_DOOR_PORT"]
