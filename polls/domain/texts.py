"""Unicode rules for the text people write into polls: what is stored, what counts as the same.

Pure functions on strings; polls.domain.services applies them to questions and options.
"""

from __future__ import annotations

import unicodedata

# Bidi controls that open an embedding or override (closed by PDF) or an isolate (closed by PDI).
_EMBEDDINGS = frozenset("\u202a\u202b\u202d\u202e")
_ISOLATES = frozenset("\u2066\u2067\u2068")
_PDF, _PDI = "\u202c", "\u2069"

# Characters that draw nothing, beside the categories below: fillers and blanks that
# Unicode files as letters or marks, and the variation selectors.
_BLANK_LOOKING = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)
# Controls, format characters (zero-width, bidi controls, tags) and separators.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _invisible(char: str) -> bool:
    return char in _BLANK_LOOKING or unicodedata.category(char) in _INVISIBLE_CATEGORIES


def text_is_invisible(text: str) -> bool:
    """True when the text draws nothing: only whitespace, zero-width and bidi controls, fillers."""
    return all(_invisible(char) for char in text)


def text_normalize(text: str) -> str:
    """The text as stored: NFC, its bidi embeddings, overrides and isolates balanced.

    A closer with no opener is dropped and an opener left open is closed at the end, so
    the text can never reorder what a page, a CSV cell or a log line shows after it.
    """
    balanced: list[str] = []
    open_controls: list[str] = []  # the openers not yet closed, innermost last
    for char in unicodedata.normalize("NFC", text):
        if char in _EMBEDDINGS or char in _ISOLATES:
            open_controls.append(char)
        elif char == _PDF:
            if not open_controls or open_controls[-1] not in _EMBEDDINGS:
                continue  # closes nothing (a PDF never closes past an isolate)
            open_controls.pop()
        elif char == _PDI:
            if not any(opener in _ISOLATES for opener in open_controls):
                continue
            # A PDI also closes the embeddings opened inside its isolate: say so explicitly.
            while open_controls[-1] in _EMBEDDINGS:
                open_controls.pop()
                balanced.append(_PDF)
            open_controls.pop()
        balanced.append(char)
    balanced.extend(_PDI if opener in _ISOLATES else _PDF for opener in reversed(open_controls))
    return "".join(balanced)


def text_skeleton(text: str) -> str:
    """What the text looks like, for telling look-alikes apart: two texts with the same
    skeleton read the same to a voter.

    NFKC (full-width and other compatibility forms become plain ones), case folded,
    invisible characters gone, whitespace runs as one space: `Red`, `red `, `Red` with a
    zero-width space and full-width `Ｒｅｄ` share one; `café` in NFC and NFD too.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    visible = "".join(char for char in folded if char.isspace() or not _invisible(char))
    return " ".join(visible.split())
