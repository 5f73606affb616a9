"""Deeply nested or oversized messages from a WebSocket client: a clear error, never a traceback."""

from __future__ import annotations

import logging

from polling.strict import JSON_MAX_DEPTH, TOO_DEEP
from polls.tests.factories import make_poll
from realtime.consumers import CLOSE_BAD_MESSAGES, connection_slots
from realtime.tests.helpers import communicator, receive, run


def test_deep_json_gets_an_error_saying_so_and_ten_thousand_deep_is_refused_unread(live, caplog):
    poll = make_poll()

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        await receive(comm)  # the snapshot
        answers = []
        for text in ("[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1), '{"type": ' + "[" * 500, "[" * 10_000):
            await comm.send_to(text_data=text)
            answers.append(await receive(comm))
        await comm.send_to(text_data='{"type": "ping"}')
        answers.append(await receive(comm))
        for _ in range(7):
            await comm.send_to(text_data="[" * 10_000)
            await receive(comm)
        closed = await comm.receive_output(timeout=2)
        return answers, closed

    with caplog.at_level(logging.WARNING):
        answers, closed = run(scenario)
    assert answers[0] == {"type": "error", "code": "invalid_json", "message": TOO_DEEP}
    assert answers[1] == {"type": "error", "code": "invalid_json", "message": TOO_DEEP}
    assert answers[2] == {
        "type": "error",
        "code": "unknown_message",
        "message": 'The only message a client may send is {"type": "ping"}. This one has over 1024 characters.',
    }
    assert answers[3] == {"type": "pong"}  # the connection went on serving
    assert closed == {"type": "websocket.close", "code": CLOSE_BAD_MESSAGES}
    assert connection_slots.open == 0
    assert not [record for record in caplog.records if record.exc_info or "RecursionError" in record.getMessage()]
