"""Progress reporting for terminals (rich) and logs (JSON lines)."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_reporter(json_lines: bool = False):
    """Yield a ``(stage, done, total)`` callback: rich bars on a TTY, JSON lines otherwise."""
    if json_lines or not sys.stderr.isatty():
        def emit(stage: str, done: int, total: int) -> None:
            if json_lines:
                print(json.dumps({"ts": round(time.time(), 3), "stage": stage, "done": done,
                                  "total": total}), file=sys.stderr, flush=True)
        yield emit
        return
    bars = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    tasks: dict[str, int] = {}
    with bars:
        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)
        yield update
