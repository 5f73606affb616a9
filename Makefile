# The two commands a newcomer needs: `make run` (the service, embedded mode) and
# `make test` (the whole suite against real PostgreSQL, Redis and Kafka).
# Everything is installed on demand: the virtualenv in .venv, Debian packages and the
# Kafka jars through `python -m devservices install`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Environment of the real services started by `make services` (read by web and worker).
SERVICES_ENV := .services/env
# Kafka nodes `make services` starts: 1, or 3 for a replicated cluster (docs/scaling.md).
KAFKA_BROKERS_COUNT ?= 1

.PHONY: install run test lint services services-stop services-status web worker migrate check clean bench audit

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The embedded default: SQLite, votes applied in process, in-memory channel layer.
run: install
	env -u DATABASE_URL -u KAFKA_BROKERS -u REDIS_URL DEBUG=1 $(BIN)/python manage.py migrate --no-input
	env -u DATABASE_URL -u KAFKA_BROKERS -u REDIS_URL DEBUG=1 \
		$(BIN)/python -m polling.serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m devservices install
	$(BIN)/python -m pytest

# The lint rules, the import contracts and the format (pyproject.toml). The test command
# runs the first two; the format check fails until the formatter has run over the tree.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/ruff format --check .

# Real PostgreSQL, Redis and Kafka on their usual ports; idempotent.
services: install
	@mkdir -p .services
	$(BIN)/python -m devservices up --kafka-brokers $(KAFKA_BROKERS_COUNT) > $(SERVICES_ENV).tmp && mv $(SERVICES_ENV).tmp $(SERVICES_ENV)
	@echo "# environment for the real services (also saved in $(SERVICES_ENV)):"
	@cat $(SERVICES_ENV)

services-stop:
	$(BIN)/python -m devservices down

services-status:
	$(BIN)/python -m devservices status

# The web process and the vote worker against the real services of `make services`:
# $(SERVICES_ENV) is loaded when it exists, over the same variables of your shell.
define with_services_env
	set -a; [ ! -f $(SERVICES_ENV) ] || . ./$(SERVICES_ENV); set +a; \
	export DEBUG=$${DEBUG:-1};
endef

migrate: install
	$(with_services_env) $(BIN)/python manage.py migrate --no-input

web: migrate
	$(with_services_env) exec $(BIN)/python -m polling.serve --host $(HOST) --port $(PORT)

worker: migrate
	$(with_services_env) exec $(BIN)/python manage.py consume_votes

check: install
	$(BIN)/python manage.py check

# The benchmark suite: starts its own real services and servers, prints a table of
# figures beside their references (ratios), e.g. make bench BENCH_ARGS="--quick".
bench: install
	$(BIN)/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BIN)/python -m devservices install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache db.sqlite3

# Known vulnerabilities in the pinned runtime dependencies (needs PyPI's JSON API).
audit: install
	$(BIN)/pip install --quiet --disable-pip-version-check pip-audit==2.10.1
	$(BIN)/pip-audit -r requirements.txt
