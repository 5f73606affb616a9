"""The WebSocket event types: their group names and how each message is built.

Every message a client receives is one JSON object with a namespaced ``type``:

- ``poll.snapshot``  on connect to ws/polls/<id>: that poll's full totals;
- ``poll.updated``   after votes landed: the poll's full totals, same shape;
- ``poll.removed``   the poll was hidden by a moderator or deleted (then the socket of
                     ws/polls/<id> closes with 4404);
- ``polls.snapshot`` on connect to ws: the newest polls' totals and the leaderboard;
- ``leaderboard.updated`` (ws only) after votes landed: the new ranking;
- ``pong`` / ``error``  answers to what the client sent.

Poll messages carry the seed's shape (id, question, option1..N) plus options, total,
status and version; the version only grows, so a client keeps the highest it has seen.
docs/websockets.md shows an example of each.
"""

from __future__ import annotations

import json
from typing import Any

# Every poll's updates: the seed's ws://host/ws.
POLLS_GROUP = "polls"

POLL_SNAPSHOT = "poll.snapshot"
POLL_UPDATED = "poll.updated"
POLL_REMOVED = "poll.removed"
POLLS_SNAPSHOT = "polls.snapshot"
LEADERBOARD_UPDATED = "leaderboard.updated"
PONG = "pong"
ERROR = "error"


def poll_group(poll_id: int) -> str:
    """The group of one poll's viewers (ws/polls/<id>)."""
    return f"poll.{poll_id}"


def poll_results_group(poll_id: int) -> str:
    """Viewers of a poll who may see counts that the poll holds back from the public:
    those who voted in a poll whose results show after voting."""
    return f"poll.{poll_id}.results"


def poll_message(*, event_type: str, totals: dict[str, Any]) -> dict[str, Any]:
    """A poll event as the client receives it: the type, then the totals, flat.

    Flat rather than nested under a key, so a client written for the seed's /ws, which
    read id and option1..N off each message, keeps working.
    """
    return {"type": event_type, **totals}


def poll_updated_layer_message(*, totals: dict[str, Any]) -> dict[str, Any]:
    """The channel-layer message that makes each viewer's consumer send poll.updated.

    The client JSON is encoded once here rather than once per viewer: with 10,000
    viewers of a poll in one process that saves 10,000 json.dumps calls per broadcast.
    poll_id and version travel beside it so a consumer can drop a stale update unread.
    """
    return {
        "type": POLL_UPDATED,
        "poll_id": totals["id"],
        "version": totals["version"],
        "text": json.dumps(poll_message(event_type=POLL_UPDATED, totals=totals)),
    }


def poll_removed_layer_message(*, poll_id: int) -> dict[str, Any]:
    return {
        "type": POLL_REMOVED,
        "poll_id": poll_id,
        "text": json.dumps({"type": POLL_REMOVED, "id": poll_id}),
    }


def leaderboard_updated_layer_message(*, leaderboard: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": LEADERBOARD_UPDATED,
        "text": json.dumps({"type": LEADERBOARD_UPDATED, "leaderboard": leaderboard}),
    }


def error_message(*, code: str, message: str) -> dict[str, Any]:
    return {"type": ERROR, "code": code, "message": message}
