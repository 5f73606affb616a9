"""The seed's service written the direct way: FastAPI + asyncpg, one UPDATE per vote.

What bench/run.py's first row measures the product against (bench/direct.py runs it on
uvicorn with 2 workers, against the product's PostgreSQL server). Its contract is the
seed's (POST /polls, POST /polls/{id}/vote, GET /polls/{id}, GET /leaderboard, ws /ws);
it has no Kafka, no worker, no rate limits, no voter identity and no idempotency: each
vote is one atomic `UPDATE ... SET countN = countN + 1` on the poll's row, and its new
totals are pushed at once to this process's WebSocket viewers.
"""

from __future__ import annotations

import json
import os

import asyncpg
from fastapi import FastAPI, HTTPException, Response, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

OPTIONS = 4
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS direct_poll (id bigserial PRIMARY KEY, question text NOT NULL, "
    + ", ".join(f"option{n} text NOT NULL, count{n} bigint NOT NULL DEFAULT 0" for n in range(1, OPTIONS + 1))
    + ")"
)
_COUNTS = ", ".join(f"count{n}" for n in range(1, OPTIONS + 1))
_VOTE = {
    n: f"UPDATE direct_poll SET count{n} = count{n} + 1 WHERE id = $1 RETURNING id, question, {_COUNTS}"
    for n in range(1, OPTIONS + 1)
}

app = FastAPI()
_pool: asyncpg.Pool | None = None
_viewers: set[WebSocket] = set()


async def pool() -> asyncpg.Pool:
    global _pool
    if _pool is None:
        _pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=16)
    return _pool


def totals(row) -> dict:
    return {
        "id": row["id"],
        "question": row["question"],
        **{f"option{n}": row[f"count{n}"] for n in range(1, OPTIONS + 1)},
    }


class NewPoll(BaseModel):
    question: str
    option1: str
    option2: str
    option3: str
    option4: str


class Vote(BaseModel):
    option: int
    poll_id: int | None = None


@app.post("/polls", status_code=201)
async def create(poll: NewPoll) -> dict:
    row = await (await pool()).fetchrow(
        "INSERT INTO direct_poll (question, option1, option2, option3, option4) VALUES ($1, $2, $3, $4, $5) "
        f"RETURNING id, question, {_COUNTS}",
        poll.question,
        poll.option1,
        poll.option2,
        poll.option3,
        poll.option4,
    )
    return totals(row)


@app.post("/polls/{poll_id}/vote", status_code=204)
async def vote(poll_id: int, ballot: Vote) -> Response:
    if ballot.poll_id is not None and ballot.poll_id != poll_id:
        raise HTTPException(400, "poll_id does not match the path")
    if ballot.option not in _VOTE:
        raise HTTPException(400, "no such option")
    row = await (await pool()).fetchrow(_VOTE[ballot.option], poll_id)
    if row is None:
        raise HTTPException(404, "no such poll")
    if _viewers:
        message = json.dumps(totals(row))
        for viewer in list(_viewers):
            try:
                await viewer.send_text(message)
            except Exception:  # noqa: BLE001 - a viewer gone mid-send
                _viewers.discard(viewer)
    return Response(status_code=204)


@app.get("/polls/{poll_id}")
async def read(poll_id: int) -> dict:
    row = await (await pool()).fetchrow(f"SELECT id, question, {_COUNTS} FROM direct_poll WHERE id = $1", poll_id)
    if row is None:
        raise HTTPException(404, "no such poll")
    return totals(row)


@app.get("/leaderboard")
async def leaderboard() -> dict:
    rows = await (await pool()).fetch(
        " UNION ALL ".join(
            f"SELECT option{n} AS option, count{n} AS count FROM direct_poll" for n in range(1, OPTIONS + 1)
        )
        + " ORDER BY count DESC LIMIT 10"
    )
    return {"leaderboard": [{"option": row["option"], "count": row["count"]} for row in rows]}


@app.websocket("/ws")
async def watch(websocket: WebSocket) -> None:
    await websocket.accept()
    _viewers.add(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        _viewers.discard(websocket)
