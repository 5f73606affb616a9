"""Results as files: shared by the API and the admin."""

from __future__ import annotations

import csv
import io
from typing import Any


def results_csv(totals: dict[str, Any]) -> str:
    """A poll's results as CSV: one row per option, with the question and its share."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["poll_id", "question", "position", "option", "votes", "percent"])
    total = totals["total"] or 0
    for option in totals["options"]:
        share = f"{100 * option['count'] / total:.1f}" if total else "0.0"
        writer.writerow([totals["id"], totals["question"], option["position"], option["text"], option["count"], share])
    return out.getvalue()
