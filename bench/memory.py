"""Section 7: peak memory of the web processes and the worker, under the other sections' loads.

Each section records, when its load is over and before it stops its processes, the
resident memory of every web server process and worker it ran: VmHWM (the kernel's
peak resident set size since the process started) and VmRSS, both from /proc/<pid>/status.
So a figure is the true peak under that load, not a sample that could miss it. With
several server processes the largest one is shown (the target is per process).

Also the hook that runs the WebSocket benchmarks (sections 4 and 5, bench/ws_*.py, owned
elsewhere) when they are present and offer `bench_rows(ctx)`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from bench.common import Row, log

LIMIT_MB = 200.0


def memory_rows(ctx) -> list[Row]:
    if not ctx.memory:
        return [Row("7 memory", "peak RSS", float("nan"), "MB", note="no section with processes ran")]
    floor = ctx.memory.get("web (floor)")
    rows = []
    for label, figures in ctx.memory.items():
        peak = figures["peak_mb"]
        is_web = label.startswith("web")
        reference = floor if is_web and label != "web (floor)" else None
        rows.append(
            Row(
                "7 memory",
                f"peak RSS, {label}",
                peak,
                "MB",
                "web (floor) peak RSS" if reference else "",
                reference["peak_mb"] if reference else None,
                peak / reference["peak_mb"] if reference else None,
                f"< {LIMIT_MB:.0f} MB",
                peak < LIMIT_MB,
            )
        )
    return rows


def run_ws_sections(ctx) -> list[Row]:
    """Sections 4 and 5 from bench/ws_*.py, when those modules offer bench_rows(ctx)."""
    rows: list[Row] = []
    bench_dir = Path(__file__).resolve().parent
    # Section 4 (ws_latency) before 5 (ws_fanout), then any other.
    order = {"ws_latency": 0, "ws_fanout": 1}
    modules = sorted(
        (p.stem for p in bench_dir.glob("ws_*.py") if p.stem != "ws_layer"), key=lambda m: (order.get(m, 9), m)
    )
    for name in modules:
        module = importlib.import_module(f"bench.{name}")
        function = getattr(module, "bench_rows", None)
        if function is None:
            rows.append(
                Row(
                    "4/5 ws",
                    f"bench/{name}.py",
                    float("nan"),
                    "",
                    note=f"present but offers no bench_rows(ctx): run `python -m bench.{name}` on its own",
                )
            )
            continue
        log(f"ws: running bench/{name}.py")
        rows.extend(function(ctx))
    if not modules:
        rows.append(
            Row(
                "4/5 ws",
                "vote-to-screen latency, fan-out",
                float("nan"),
                "",
                note="pending: bench/ws_*.py (other than ws_layer.py) not there yet",
            )
        )
    return rows
