"""CSV export: no cell a spreadsheet could run as a formula (CSV injection)."""

import csv
import io
import re
import unicodedata

import pytest
from django.test import Client

from polls.domain.services import poll_create
from polls.models import Option, Poll

pytestmark = pytest.mark.django_db

# Each of these would start a formula in some spreadsheet, as written or as read.
FORMULAS = [
    # OWASP's list
    "=1+2",
    "+1+3",
    "-1+4",
    "@SUM(1+5)",
    "\t=1+6",
    "\r=1+7",
    # Full-width and compatibility forms that NFKC folds to "=", "+", "-", "@"
    "＝1+4",
    "＋1",
    "－1",
    "＠SUM(1)",
    "﹦1",
    # Invisible characters in front: zero-width, bidi controls, BOM, spaces, a filler
    "\u200b=1",
    "\u200d\u200c+1",
    "\u202e=1\u202c",
    "\u2066@x\u2069",
    "\ufeff=1",
    "\u00a0=1",
    "\u3000=1",
    "\u3164=1",
    "\u0301=1",
    # A separator or a quote then a formula: a new cell for importers that split there
    ";=1+6",
    "x;=1+6",
    "a,=1",
    'a"=1',
    "a|=1",
    "line\n=1",
]
PLAIN = ["Red", "café", "C++", "e-mail", "a;b", "x = y", "1+1"]


def exported_rows(client: Client, poll_id: int) -> list[list[str]]:
    answer = client.get(f"/polls/{poll_id}/export.csv")
    assert answer.status_code == 200
    return list(csv.reader(io.StringIO(answer.content.decode())))


def polls_with(texts: list[str]) -> list:
    """Polls whose question and options are the given texts, ten options a poll at most.

    Written as stored, past the rules a new poll's text meets now (polls.domain.texts): the
    export must be safe for any text in the database, older polls' included.
    """
    polls = []
    for start in range(0, len(texts), 9):
        chunk = [*texts[start : start + 9], "padding"]
        poll = Poll.objects.create(question=chunk[0])
        Option.objects.bulk_create(Option(poll=poll, position=n, text=text) for n, text in enumerate(chunk, start=1))
        polls.append(poll)
    return polls


def test_every_formula_looking_text_is_written_with_a_leading_apostrophe():
    """And with one after the separator where a split cell would start: `x;'=1+6`."""
    client = Client(HTTP_HOST="localhost")
    written = {}
    for poll in polls_with(FORMULAS + PLAIN):
        rows = exported_rows(client, poll.pk)[1:]
        written[poll.question] = rows[0][1]
        written.update({option.text: row[3] for option, row in zip(poll.options.order_by("position"), rows)})
    assert all(written[text].startswith("'") for text in FORMULAS), written
    assert [written[text] for text in ("＝1+4", "\u200b=1", "=1+2", ";=1+6", "x;=1+6", "a|=1")] == [
        "'＝1+4",
        "'\u200b=1",
        "'=1+2",
        "';'=1+6",
        "'x;'=1+6",
        "'a|'=1",
    ]
    assert {text: written[text] for text in PLAIN} == {text: text for text in PLAIN}


@pytest.mark.parametrize("separator", [",", ";", "\t", "|", "\n"])
def test_split_on_any_separator_with_quotes_ignored_no_cell_starts_a_formula(separator):
    """The worst importer: every line and every separator starts a cell, quotes are text."""
    client = Client(HTTP_HOST="localhost")
    for poll in polls_with(FORMULAS):
        body = client.get(f"/polls/{poll.pk}/export.csv").content.decode()
        for line in re.split(r"\r\n|\r|\n", body):
            for cell in line.split(separator):
                visible = "".join(
                    c
                    for c in unicodedata.normalize("NFKC", cell)
                    if unicodedata.category(c)[0] not in "CZM" and c != '"'
                )
                assert not visible.startswith(("=", "+", "-", "@")), (separator, cell)


def test_every_cell_is_quoted():
    client = Client(HTTP_HOST="localhost")
    poll = poll_create(question="x;=1+6", options=["a", "b"])
    body = client.get(f"/polls/{poll.pk}/export.csv").content.decode()
    assert body.splitlines()[1] == f'"{poll.pk}","\'x;\'=1+6","1","a","0","0.0"'
