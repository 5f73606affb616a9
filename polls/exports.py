"""Results as files: shared by the API and the admin."""

from __future__ import annotations

import csv
import io
from typing import Any


# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def results_csv(totals: dict[str, Any]) -> str:
    """A poll's results as CSV: one row per option, with the question and its share.

    The question and the option texts are anyone's input (polls need no sign-in by
    default), and a moderator opens the file in a spreadsheet: a text that would start
    a formula (=HYPERLINK(...), @SUM(...)) is written with a leading apostrophe, which
    the spreadsheet shows as text (OWASP's advice on CSV injection).
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["poll_id", "question", "position", "option", "votes", "percent"])
    total = totals["total"] or 0
    question = _as_text(totals["question"])
    for option in totals["options"]:
        share = f"{100 * option['count'] / total:.1f}" if total else "0.0"
        writer.writerow([totals["id"], question, option["position"], _as_text(option["text"]), option["count"], share])
    return out.getvalue()


def _as_text(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value
