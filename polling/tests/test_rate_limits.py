"""Rate limits decided in process and shared through the test run's Redis in the background."""

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache import cache
from django.test import Client

from polling import settings as settings_module
from polling import throttles
from polling.metrics import WEB_REGISTRY
from polling.throttles import SharedWindowCounts, throttles_forget
from polls.domain.voters import voter_token_issue
from polls.tests.factories import make_poll
from tests.http import request
from testsupport.processes import WebServer, wait_until


@pytest.fixture
def new_counts():
    """SharedWindowCounts as a process would have, their sync threads stopped after the test."""
    made = []

    def make(interval: float = 60) -> SharedWindowCounts:  # a minute: the test syncs, not the thread
        counts = SharedWindowCounts(cache, interval=interval)
        made.append(counts)
        return counts

    yield make
    for counts in made:
        counts.close()


def redis_count(key: str) -> int:
    return int(cache.get(key) or 0)


def fresh_key() -> str:
    return f"throttle:test:{uuid.uuid4().hex}:0"


def test_one_process_counts_exactly_without_waiting_for_a_sync(new_counts):
    counts = new_counts()
    key = fresh_key()
    assert [counts.add([(key, 3600)])[0] for _ in range(7)] == [1, 2, 3, 4, 5, 6, 7]
    assert redis_count(key) == 0
    assert counts.sync() is True
    assert redis_count(key) == 7
    assert counts.add([(key, 3600)]) == [8]


def test_processes_see_each_others_requests_once_synced(new_counts):
    first, second = new_counts(), new_counts()
    key = fresh_key()
    for _ in range(3):
        first.add([(key, 3600)])
    assert first.sync() is True
    # A process decides on the count it read at its last sync plus its own requests
    # since: before its first sync the second process knows only its own request.
    assert second.add([(key, 3600)]) == [1]
    assert second.sync() is True
    assert second.add([(key, 3600)]) == [3 + 1 + 1]
    assert first.add([(key, 3600)]) == [3 + 1]  # the second's request is not known here yet
    assert first.sync() is True
    assert redis_count(key) == 5  # the second's last request is still to be sent
    assert first.add([(key, 3600)]) == [5 + 1]


def test_the_background_thread_sends_the_counts_within_its_interval(new_counts):
    counts = new_counts(interval=0.02)
    key = fresh_key()
    for _ in range(5):
        counts.add([(key, 3600)])
    wait_until(lambda: redis_count(key) == 5, timeout=5, what="the counts in Redis")


def test_a_closed_instance_sends_nothing_more(new_counts):
    counts = new_counts(interval=0.02)
    key = fresh_key()
    counts.close()
    assert counts.add([(key, 3600)]) == [1]  # still decides
    time.sleep(0.3)
    assert redis_count(key) == 0


def syncs(result: str) -> float:
    return WEB_REGISTRY.get_sample_value("polling_rate_limit_syncs_total", {"result": result}) or 0.0


def test_while_redis_is_down_limits_hold_per_process_and_counts_are_sent_when_it_is_back(new_counts, services, caplog):
    counts = new_counts()
    key = fresh_key()
    failed, ok = syncs("failed"), syncs("ok")
    services.redis.stop()
    try:
        assert [counts.add([(key, 3600)])[0] for _ in range(3)] == [1, 2, 3]
        assert counts.sync() is False
        assert "rate-limit counts not shared, the cache is unavailable" in caplog.text
        assert syncs("failed") >= failed + 1
    finally:
        services.redis.start()
    assert counts.sync() is True
    assert "rate-limit counts shared again" in caplog.text
    assert syncs("ok") >= ok + 1
    assert redis_count(key) == 3
    assert counts.add([(key, 3600)]) == [4]


def test_windows_that_ended_are_forgotten(new_counts):
    counts = new_counts()
    counts.add([(fresh_key(), 1), (fresh_key(), 3600)])
    assert counts.windows() == 2
    time.sleep(1.1)
    assert counts.sync() is True
    assert counts.windows() == 1


def test_past_its_most_windows_a_process_forgets_the_least_recently_used(new_counts, monkeypatch):
    monkeypatch.setattr(SharedWindowCounts, "MAX_WINDOWS", 3)
    counts = new_counts()
    keys = [fresh_key() for _ in range(5)]
    for key in keys:
        counts.add([(key, 3600)])
    counts.add([(keys[0], 3600)])  # the first is now the most recently used
    assert counts.sync() is True
    assert counts.windows() == 3
    assert counts.add([(keys[0], 3600)]) == [3]  # remembered: Redis had 2
    # Forgotten: decided as in a process that never saw it, until its next sync.
    assert counts.add([(keys[1], 3600)]) == [1]
    assert counts.sync() is True
    assert redis_count(keys[1]) == 2
    assert counts.add([(keys[1], 3600)]) == [3]


@pytest.mark.django_db
def test_a_vote_is_decided_without_waiting_for_redis(settings, in_process_bus):
    settings.RATE_LIMIT_VOTES_PER_ADDRESS = "5/hour"
    throttles_forget()
    cache.clear()
    client = Client(HTTP_HOST="localhost")
    poll = make_poll()
    shared = throttles._shared_counts(cache)
    with shared._sync_lock:  # no sync can run: a request that waited for Redis would hang here
        statuses = [
            client.post(f"/polls/{poll.pk}/vote", '{"option": 1}', content_type="application/json").status_code
            for _ in range(7)
        ]
    assert statuses == [204] * 5 + [429] * 2
    assert poll.options.get(position=1).votes == 5
    assert shared.sync() is True
    assert _address_counts() == [7]


def _address_counts():
    client = cache._cache.get_client(write=True)
    return [int(client.get(key)) for key in client.scan_iter("*throttle:vote-address:*")]


@pytest.mark.django_db
def test_with_sync_off_every_request_is_counted_in_redis_at_once(settings, in_process_bus):
    settings.RATE_LIMIT_VOTES_PER_ADDRESS = "5/hour"
    settings.RATE_LIMIT_SYNC_MS = 0
    throttles_forget()
    cache.clear()
    client = Client(HTTP_HOST="localhost")
    poll = make_poll()
    seen = []
    for _ in range(6):
        seen.append(
            (
                client.post(f"/polls/{poll.pk}/vote", '{"option": 2}', content_type="application/json").status_code,
                sum(_address_counts()),
            )
        )
    assert seen == [(204, 1), (204, 2), (204, 3), (204, 4), (204, 5), (429, 6)]


@pytest.mark.django_db(transaction=True)
def test_a_voters_limit_holds_across_two_web_processes(process_env, tmp_path):
    env = {**process_env, "RATE_LIMIT_VOTES_PER_VOTER": "10/hour"}
    servers = [WebServer(env=env, log_dir=tmp_path) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        poll_id = request("POST", f"{servers[0].url}/polls", {"question": "q", "option1": "a", "option2": "b"}).json()[
            "id"
        ]
        token = request("POST", f"{servers[0].url}/voters").json()["voter_token"]
        statuses = []
        for n in range(24):
            statuses.append(
                request(
                    "POST",
                    f"{servers[n % 2].url}/polls/{poll_id}/vote",
                    {"option": 1},
                    headers={"X-Voter-Token": token},
                ).status
            )
            time.sleep(0.1)  # longer than a sync (20 ms and a round trip)
        # A process decides on the count it read at its last sync plus its own votes
        # since, so each may take one vote the other took meanwhile; never more. With
        # each process counting alone, 20 would have got through.
        admitted = statuses.count(204)
        assert 10 <= admitted <= 12, statuses
        assert statuses == [204] * admitted + [429] * (24 - admitted), statuses
    finally:
        for server in servers:
            server.terminate()


# --- Venue-safe defaults ------------------------------------------------------------------------
# A whole audience can share one address; per address only what no venue sends is
# refused, and a flood is stopped per voter token or user.


@pytest.fixture
def default_limits(settings):
    """The limits as shipped (the suite turns them off), counted afresh."""
    for name, rate in settings_module.RATE_LIMIT_DEFAULTS.items():
        setattr(settings, name, rate)
    throttles_forget()
    cache.clear()
    yield
    throttles_forget()
    cache.clear()


def _vote(client: Client, poll_id: int, **headers) -> int:
    return client.post(
        f"/polls/{poll_id}/vote", '{"option": 1}', content_type="application/json", **headers
    ).status_code


@pytest.mark.django_db(transaction=True)
def test_3000_distinct_voters_from_one_address_within_a_minute_are_all_counted(process_env, vote_worker, tmp_path):
    # The web process with the shipped defaults: none of the suite's RATE_LIMIT_* overrides.
    env = {name: value for name, value in process_env.items() if not name.startswith("RATE_LIMIT_")}
    server = WebServer(env=env, log_dir=tmp_path)
    server.start()
    try:
        poll_id = request("POST", f"{server.url}/polls", {"question": "Venue?", "option1": "a", "option2": "b"}).json()[
            "id"
        ]
        # Every vote from 127.0.0.1 with no voter token: each a new voter, as each phone's first vote is.
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = Counter(
                pool.map(
                    lambda _: request("POST", f"{server.url}/polls/{poll_id}/vote", {"option": 1}).status, range(3000)
                )
            )
        assert statuses == {204: 3000}
        wait_until(
            lambda: request("GET", f"{server.url}/polls/{poll_id}").json()["total"] == 3000,
            timeout=120,
            what="3,000 votes counted",
        )
    finally:
        server.terminate()


@pytest.mark.django_db
def test_one_voter_sending_100_votes_a_second_gets_429s(default_limits, in_process_bus):
    client = Client(HTTP_HOST="localhost")
    poll = make_poll()
    token = client.post("/voters").json()["voter_token"]
    statuses = []
    start = time.monotonic()
    for n in range(200):
        # At most 100 a second (slower when the machine is busy): a script, not a person.
        time.sleep(max(0.0, start + n / 100 - time.monotonic()))
        statuses.append(_vote(client, poll.pk, HTTP_X_VOTER_TOKEN=token))
    admitted = statuses.count(204)
    # 60 a minute; the two seconds may straddle two minute windows.
    assert 60 <= admitted <= 120, statuses
    assert set(statuses) == {204, 429}
    assert poll.options.get(position=1).votes == admitted
    # Another voter behind the same address is not affected.
    other = client.post("/voters").json()["voter_token"]
    assert _vote(client, poll.pk, HTTP_X_VOTER_TOKEN=other) == 204


@pytest.mark.django_db
def test_one_address_minting_voter_tokens_in_a_tight_loop_is_slowed_down(default_limits, settings):
    settings.ACCESS_LOG = False  # thousands of requests: their log lines are not what is tested
    client = Client(HTTP_HOST="localhost")
    minted = 0
    while (response := client.post("/voters")).status_code == 201:
        minted += 1
        assert minted <= 12_000, "6,000 a minute: two minute windows at the most before a 429"
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    # A venue's 6,000 new voters in one minute were let in first.
    assert minted >= 6_000


@pytest.mark.django_db
def test_votes_without_a_voter_token_count_as_new_voters_of_the_address(settings, in_process_bus):
    settings.RATE_LIMIT_NEW_VOTERS_PER_ADDRESS = "3/hour"
    throttles_forget()
    cache.clear()
    poll = make_poll()
    statuses = [_vote(Client(HTTP_HOST="localhost"), poll.pk) for _ in range(4)]  # no cookie kept: a new voter each
    assert statuses == [204, 204, 204, 429]
    # A voter who has a token is no new voter: not refused by that limit.
    client = Client(HTTP_HOST="localhost")
    assert client.post("/voters").status_code == 429  # minting counts in the same window
    known = Client(HTTP_HOST="localhost")
    known.cookies.load({"voter": voter_token_issue()[1]})
    assert _vote(known, poll.pk) == 204
