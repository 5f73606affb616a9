"""The seed's HTTP contract, through the real Kafka broker and PostgreSQL."""

import json

import pytest
from django.test import Client

from polls.kafka.events import VoteEvent
from polls.models import Poll
from polls.tests.factories import counts, make_poll
from testsupport.kafka import read_topic
from testsupport.processes import wait_until

SEED_POLL = {
    "question": "What is your favorite color?",
    "option1": "Red",
    "option2": "Blue",
    "option3": "Green",
    "option4": "Yellow",
}


@pytest.fixture
def client():
    return Client(HTTP_HOST="localhost")


def post_json(client, path, body):
    return client.post(
        path, json.dumps(body) if not isinstance(body, (str, bytes)) else body, content_type="application/json"
    )


@pytest.mark.django_db
def test_create_poll_answers_201_with_the_seed_shape_and_zero_counts(client, kafka_topic):
    response = post_json(client, "/polls", SEED_POLL)
    assert response.status_code == 201
    body = response.json()
    poll_id = body["id"]
    assert {k: body[k] for k in ("id", "question", "option1", "option2", "option3", "option4")} == {
        "id": poll_id,
        "question": "What is your favorite color?",
        "option1": 0,
        "option2": 0,
        "option3": 0,
        "option4": 0,
    }
    assert body["options"] == [
        {"position": 1, "text": "Red", "count": 0},
        {"position": 2, "text": "Blue", "count": 0},
        {"position": 3, "text": "Green", "count": 0},
        {"position": 4, "text": "Yellow", "count": 0},
    ]
    assert (body["total"], body["status"], body["version"]) == (0, "open", 0)
    assert Poll.objects.get(pk=poll_id).question == "What is your favorite color?"


@pytest.mark.django_db
def test_a_poll_with_two_options_answers_only_option1_and_option2(client, kafka_topic):
    body = post_json(client, "/polls", {"question": "Tea or coffee?", "option1": "Tea", "option2": "Coffee"}).json()
    assert "option3" not in body and "option4" not in body
    assert (body["option1"], body["option2"]) == (0, 0)


def test_vote_answers_204_and_is_counted_by_the_worker(client, kafka_topic, worker_thread):
    poll = make_poll()
    for option in (3, 3, 1):
        response = post_json(client, f"/polls/{poll.pk}/vote", {"poll_id": poll.pk, "option": option})
        assert response.status_code == 204
        assert response.content == b""
    response = post_json(client, f"/polls/{poll.pk}/vote", {"option": 2})  # poll_id may be left out
    assert response.status_code == 204

    wait_until(lambda: counts(poll) == [1, 1, 2, 0], timeout=30, what="the worker to count 4 votes")
    body = client.get(f"/polls/{poll.pk}").json()
    assert {k: body[k] for k in ("id", "question", "option1", "option2", "option3", "option4", "total")} == {
        "id": poll.pk,
        "question": "Favourite colour?",
        "option1": 1,
        "option2": 1,
        "option3": 2,
        "option4": 0,
        "total": 4,
    }


def test_an_accepted_vote_is_in_kafka_keyed_by_poll_when_the_204_is_sent(client, kafka_topic, db):
    poll = make_poll()
    assert post_json(client, f"/polls/{poll.pk}/vote", {"option": 4}).status_code == 204
    (record,) = read_topic(kafka_topic)
    event = VoteEvent.from_bytes(record.value)
    assert (record.key, event.poll_id, event.options) == (str(poll.pk).encode(), poll.pk, (4,))
    assert event.voter_key.startswith("voter:")  # a token was issued with this first vote
    assert event.dedupe_key is None  # the seed's polls take any number of votes


def test_get_unknown_poll_is_404_with_a_message(client, db):
    response = client.get("/polls/424242")
    assert response.status_code == 404
    assert response.json() == {"detail": "No poll with id 424242."}


@pytest.mark.django_db
def test_paths_work_exactly_as_written_without_slash_redirects(client, kafka_topic):
    poll = make_poll()
    assert post_json(client, "/polls/", SEED_POLL).status_code == 404
    assert post_json(client, f"/polls/{poll.pk}/vote/", {"option": 1}).status_code == 404
    assert client.get(f"/polls/{poll.pk}/").status_code == 404
    assert client.get("/leaderboard/").status_code == 404
    assert read_topic(kafka_topic) == []


def test_leaderboard_ranks_options_of_all_polls_most_votes_first(client, kafka_topic, worker_thread):
    colours = make_poll()
    pets = make_poll("Cats or dogs?", ("Cats", "Dogs"))
    for poll, option, times in ((colours, 3, 3), (colours, 1, 2), (pets, 2, 2), (pets, 1, 1)):
        for _ in range(times):
            assert post_json(client, f"/polls/{poll.pk}/vote", {"option": option}).status_code == 204
    wait_until(lambda: counts(colours) == [2, 0, 3, 0] and counts(pets) == [1, 2], timeout=30, what="8 votes counted")

    board = client.get("/leaderboard").json()["leaderboard"]
    assert [(e["option"], e["count"]) for e in board] == [
        ("Green", 3),
        ("Red", 2),  # ties broken by poll id, then position: colours was created first
        ("Dogs", 2),
        ("Cats", 1),
        ("Blue", 0),
        ("Yellow", 0),
    ]
    assert board[0] == {
        "option": "Green",
        "count": 3,
        "poll_id": colours.pk,
        "position": 3,
        "question": "Favourite colour?",
    }
    assert [e["option"] for e in client.get("/leaderboard?limit=2").json()["leaderboard"]] == ["Green", "Red"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, error",
    [
        ("limit=0", {"limit": ["Ensure this value is greater than or equal to 1."]}),
        ("limit=abc", {"limit": ["A valid integer is required."]}),
        ("limit=101", {"limit": ["Ensure this value is less than or equal to 100."]}),
    ],
)
def test_leaderboard_refuses_a_bad_limit(client, query, error):
    response = client.get(f"/leaderboard?{query}")
    assert (response.status_code, response.json()) == (400, error)


@pytest.mark.django_db
def test_leaderboard_default_limit_is_ten(client):
    for n in range(4):
        make_poll(f"Poll {n}")
    assert len(client.get("/leaderboard").json()["leaderboard"]) == 10


# --- bad input: a clear 4xx, and nothing reaches Kafka --------------------------------


LOOK_THE_SAME = "Options 1 and 2 look the same; options must differ from one another."


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, status, error",
    [
        ({"option1": "a", "option2": "b"}, 400, {"question": ["This field is required."]}),
        ({"question": "  ", "option1": "a", "option2": "b"}, 400, {"question": ["This field may not be blank."]}),
        ({"question": "q", "option1": "a"}, 400, {"options": ["A poll has 2 to 10 options; this one has 1."]}),
        (
            {"question": "q", "option1": "a", "option3": "c"},
            400,
            {"option2": ["Options must be consecutive from option1: option2 is missing."]},
        ),
        ({"question": "q", "option1": "a", "option2": "A"}, 409, {"options": [LOOK_THE_SAME]}),
        (
            {"question": "q" * 501, "option1": "a", "option2": "b"},
            400,
            {"question": ["Ensure this field has no more than 500 characters."]},
        ),
        (
            {"question": "q", "option1": "a" * 201, "option2": "b"},
            400,
            {"option1": ["Ensure this field has no more than 200 characters."]},
        ),
        (
            {"question": "q\x00", "option1": "a", "option2": "b"},
            400,
            {"question": ["Null characters are not allowed."]},
        ),
        ({"question": ["q"], "option1": "a", "option2": "b"}, 400, {"question": ["Not a valid string."]}),
        ([1, 2], 400, {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}),
    ],
)
def test_create_poll_refuses_bad_input(client, kafka_topic, body, status, error):
    response = post_json(client, "/polls", body)
    assert (response.status_code, response.json()) == (status, error)
    assert Poll.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "first, second",
    [
        ("Red", "Red\u200b"),  # a zero-width space
        ("Red", "\u2066Red\u2069"),  # bidi isolates around it
        ("Red", "\uff32\uff45\uff44"),  # full-width
        ("Red", "RED"),
        ("Red", "R\u00ade\u034fd"),  # a soft hyphen, a combining grapheme joiner
        ("caf\u00e9", "cafe\u0301"),  # NFC and NFD
        ("Two words", "Two\u3000\u3000words"),  # ideographic spaces
        ("\ufb01ve", "five"),  # the fi ligature
    ],
)
def test_create_poll_refuses_options_that_look_the_same(client, first, second):
    for body in (
        {"question": "q", "option1": first, "option2": second},
        {"question": "q", "options": ["x", first, second]},
    ):
        response = post_json(client, "/polls", body)
        # Schema-valid (no schema can compare two options), so a 409, not a 400.
        assert response.status_code == 409
        assert response.json()["options"][0].endswith("look the same; options must differ from one another.")
    assert Poll.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "invisible",
    [
        "\u200b",
        "\u200b\u200c\u200d\u2060\ufeff",
        "\u202e\u202c",
        "\u2066\u2069\u200e",
        "\u3164",
        "\u00a0\u200b",
        "\u2800",
        "\ufe0f",
    ],
)
def test_create_poll_refuses_text_made_only_of_invisible_characters(client, invisible):
    question = post_json(client, "/polls", {"question": invisible, "option1": "a", "option2": "b"})
    assert (question.status_code, question.json()) == (409, {"question": ["The question has no visible text."]})
    option = post_json(client, "/polls", {"question": "q", "option1": "a", "option2": invisible})
    assert (option.status_code, option.json()) == (409, {"options": ["Option 2 has no visible text."]})
    assert Poll.objects.count() == 0


@pytest.mark.django_db
def test_create_poll_stores_nfc_text_with_its_bidi_controls_balanced(client):
    body = {
        "question": "Qu'est-ce que c\u0327a ?",
        "options": ["cafe\u0301", "\u202eevil\u202c txt", "\u202eopen", "a\u202cb\u2069", "\u2067x\u202ay"],
    }
    created = post_json(client, "/polls", body).json()
    assert created["question"] == "Qu'est-ce que \u00e7a ?"
    assert [option["text"] for option in created["options"]] == [
        "caf\u00e9",
        "\u202eevil\u202c txt",
        "\u202eopen\u202c",
        "ab",
        "\u2067x\u202ay\u202c\u2069",
    ]
    poll = Poll.objects.get()
    assert poll.question == created["question"] and poll.options.get(position=3).text == "\u202eopen\u202c"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, error",
    [
        ({}, {"option": ["This field is required."]}),
        ({"option": "1"}, {"option": ["A valid integer is required."]}),
        ({"option": 1.0}, {"option": ["A valid integer is required."]}),
        ({"option": True}, {"option": ["A valid integer is required."]}),
        ({"option": None}, {"option": ["This field is required."]}),  # null: as if left out
        ({"option": 1, "poll_id": "x"}, {"poll_id": ["A valid integer is required."]}),
    ],
)
def test_vote_refuses_bad_input_and_publishes_nothing(client, kafka_topic, body, error):
    poll = make_poll()
    response = post_json(client, f"/polls/{poll.pk}/vote", body)
    assert (response.status_code, response.json()) == (400, error)
    assert read_topic(kafka_topic) == []


@pytest.mark.django_db
@pytest.mark.parametrize("option", [5, 0, -1, 10**40])
def test_a_well_formed_vote_for_an_option_the_poll_lacks_is_a_409(client, kafka_topic, option):
    # 409, not 400: the schema allows any integer; it is this poll that has options 1 to 4.
    poll = make_poll()
    response = post_json(client, f"/polls/{poll.pk}/vote", {"option": option})
    assert (response.status_code, response.json()) == (
        409,
        {"option": [f"Option {option} does not exist: this poll has options 1 to 4."]},
    )
    assert read_topic(kafka_topic) == []


@pytest.mark.django_db
def test_vote_whose_poll_id_contradicts_the_path_is_refused(client, kafka_topic):
    poll = make_poll()
    response = post_json(client, f"/polls/{poll.pk}/vote", {"poll_id": poll.pk + 1, "option": 1})
    assert response.status_code == 409
    assert response.json() == {"poll_id": [f"Does not match the poll in the path: {poll.pk + 1} != {poll.pk}."]}
    assert read_topic(kafka_topic) == []


@pytest.mark.django_db
def test_vote_for_an_unknown_poll_is_404(client, kafka_topic):
    response = post_json(client, "/polls/999999/vote", {"option": 1})
    assert (response.status_code, response.json()) == (404, {"detail": "No poll with id 999999."})
    response = post_json(client, "/polls/99999999999999999999999/vote", {"option": 1})
    assert response.status_code == 404
    assert read_topic(kafka_topic) == []


@pytest.mark.django_db
def test_vote_on_a_closed_poll_is_409(client, kafka_topic):
    poll = make_poll()
    Poll.objects.filter(pk=poll.pk).update(status=Poll.Status.CLOSED)
    response = post_json(client, f"/polls/{poll.pk}/vote", {"option": 1})
    assert (response.status_code, response.json()) == (409, {"detail": f"Poll {poll.pk} is closed to votes."})
    assert read_topic(kafka_topic) == []


@pytest.mark.django_db
def test_malformed_json_wrong_content_type_and_oversized_bodies_are_refused(client, kafka_topic):
    poll = make_poll()
    path = f"/polls/{poll.pk}/vote"

    response = post_json(client, path, '{"option": 1')
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")

    response = client.post(path, "option=1", content_type="application/x-www-form-urlencoded")
    assert (response.status_code, response.json()) == (
        415,
        {"detail": 'Unsupported media type "application/x-www-form-urlencoded" in request.'},
    )

    huge = json.dumps({"option": 1, "padding": "x" * 20_000})
    response = post_json(client, path, huge)
    assert response.status_code == 413
    assert response.json() == {"detail": f"Request body too large: {len(huge)} bytes, at most 16384 accepted."}

    response = post_json(client, "/polls", json.dumps({**SEED_POLL, "padding": "x" * 20_000}))
    assert response.status_code == 413
    assert read_topic(kafka_topic) == []
    assert counts(poll) == [0, 0, 0, 0]
