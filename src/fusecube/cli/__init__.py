"""The ``fusecube`` command line: thin commands that parse, validate and call the library."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``fusecube`` command (see :mod:`fusecube.cli.app`)."""
    from fusecube.cli.app import main as _main

    _main(argv)
