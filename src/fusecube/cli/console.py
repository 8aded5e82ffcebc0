"""The consoles every command prints to (``out`` for results, ``err`` for errors), and helpers."""

from rich.console import Console

out = Console()
err = Console(stderr=True)


def run_with_progress(start, log_json: bool) -> None:
    """Call ``start(reporter)`` (a runner entry) under a progress reporter and print the result."""
    import signal

    from fusecube.errors import RunInterrupted
    from fusecube.runner.progress import progress_reporter
    from fusecube.runner.summary import result_lines

    try:
        with progress_reporter(json_lines=log_json) as report:
            result = start(report)
    except RunInterrupted:
        # the run has stopped and recorded it: a late second Ctrl-C must not bury the message
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise
    for line in result_lines(result):
        out.print(line)


def validated(model, what: str, **fields):
    """``model(**fields)`` (a pydantic model), a :class:`~fusecube.errors.ConfigError` if invalid."""
    from pydantic import ValidationError

    from fusecube.errors import ConfigError

    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid {what}: {problems}") from exc


def names(text: str) -> tuple[str, ...]:
    """``"vv, vh,"`` → ``("vv", "vh")``: a comma-separated option as a tuple of names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def print_json(data, *, indent: int | None = 2, stderr: bool = False) -> None:
    """Print ``data`` as strict JSON (NaN/inf as null, paths and dates as text).

    Written as plain text, never wrapped or coloured, so the output parses in a pipe and in
    a terminal alike.

    Args:
        data: What to print.
        indent: Indentation; ``None`` for one line (JSON lines).
        stderr: Print to stderr (progress lines) instead of stdout.
    """
    import sys

    from fusecube.json_safe import dumps

    stream = sys.stderr if stderr else sys.stdout
    stream.write(dumps(data, indent=indent) + "\n")
    stream.flush()
