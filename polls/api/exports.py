"""Results as files: shared by the API and the admin."""

from __future__ import annotations

import csv
import io
import unicodedata
from typing import Any

# A cell whose text, as a spreadsheet reads it, starts with one of these is a formula to
# Excel, LibreOffice or Google Sheets (OWASP's list; a tab or CR only as the very first
# character, where they count as such).
_FORMULA_STARTS = frozenset("=+-@")
# After one of these an importer may start a new cell (one that splits on ";" or "|", or
# ignores quotes, or reads line by line), so what follows is checked as a cell too.
_SEPARATORS = frozenset(",;|\t\r\n\"'")
# Characters a reader does not see, skipped when looking for a formula: format
# characters (zero-width, bidi controls, BOM), combining marks, spaces of every kind,
# control characters, and the letters that render as blanks (Hangul fillers, braille blank).
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Cc"})
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def results_csv(totals: dict[str, Any]) -> str:
    """A poll's results as CSV: one row per option, with the question and its share.

    The question and the option texts are anyone's input (polls need no sign-in by
    default), and a moderator opens the file in a spreadsheet. OWASP's advice on CSV
    injection: every cell quoted, and an apostrophe wherever a cell could start a
    formula (see as_text).
    """
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow(["poll_id", "question", "position", "option", "votes", "percent"])
    total = totals["total"] or 0
    question = as_text(totals["question"])
    for option in totals["options"]:
        share = f"{100 * option['count'] / total:.1f}" if total else "0.0"
        writer.writerow([totals["id"], question, option["position"], as_text(option["text"]), option["count"], share])
    return out.getvalue()


def as_text(value: str) -> str:
    """The text with an apostrophe, which a spreadsheet shows as text, in front of every
    place where a cell could start with a formula: the start, and after each separator.

    Invisible characters are skipped and full-width forms folded (NFKC) before looking,
    so `＝1+4` and a zero-width space before `=` count; so does `x;=1+6`, which an
    importer splitting on ";" reads as a cell `=1+6`. The whole text then starts with
    an apostrophe too.
    """
    out: list[str] = []
    cell_start: int | None = 0  # where in `out` the cell being looked at starts; None once it is text
    neutralised = False
    for position, char in enumerate(value):
        if cell_start is not None:
            folded = unicodedata.normalize("NFKC", char)
            if folded[:1] in _FORMULA_STARTS or (position == 0 and char in "\t\r"):
                out.insert(cell_start, "'")
                neutralised, cell_start = True, None
            elif not all(_invisible(c) for c in folded):
                cell_start = None
        out.append(char)
        if char in _SEPARATORS:
            cell_start = len(out)
    text = "".join(out)
    return f"'{text}" if neutralised and not text.startswith("'") else text


def _invisible(char: str) -> bool:
    return unicodedata.category(char) in _INVISIBLE_CATEGORIES or char in _BLANK_LETTERS
