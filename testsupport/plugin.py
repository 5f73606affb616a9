"""A pytest plugin that starts real PostgreSQL, Redis and Kafka before Django loads.

Django reads its settings from the environment when pytest-django sets it up, which
happens before any conftest or fixture runs; so the services start here, in a wrapper
around pytest_load_initial_conftests, and their addresses go into the environment the
settings read. Each test run gets its own instances on free ports in a temporary
directory, so tests may stop, kill and restart them.

Set POLLING_TEST_SERVICES=external to use services already running at the DATABASE_URL,
REDIS_URL and KAFKA_BROKERS in the environment instead (fault tests then cannot run).
"""

from __future__ import annotations

import os

import pytest

from testsupport.services import ServiceStack

_stack: ServiceStack | None = None


def service_stack() -> ServiceStack:
    if _stack is None:
        raise RuntimeError("The test services were not started by testsupport.plugin.")
    return _stack


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _stack
    os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789")
    os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
    os.environ.setdefault("DEBUG", "0")
    # Load tests send thousands of votes from 127.0.0.1; the rate-limit tests turn the
    # limits on for themselves.
    for name in (
        "RATE_LIMIT_VOTES_PER_ADDRESS",
        "RATE_LIMIT_NEW_VOTERS_PER_ADDRESS",
        "RATE_LIMIT_VOTES_PER_VOTER",
        "RATE_LIMIT_POLLS_PER_ADDRESS",
    ):
        os.environ.setdefault(name, "0")
    if os.environ.get("POLLING_TEST_SERVICES") != "external":
        _stack = ServiceStack.start_all()
        early_config.add_cleanup(_stack.stop_all)
        os.environ.update(_stack.environment())
    return (yield)
