"""Every command of ``fusecube`` reached by walking the command tree, each ``--help`` checked.

The rules each command's help must fit:

- ``--help`` exits 0 and shows the command's full name (``fusecube batch run``);
- a one-line summary: the first paragraph of its help is one sentence on one line of at most
  80 characters, ending with a full stop;
- every argument and option has its own help text;
- no ``<bool>`` value placeholder: a flag is ``--flag``, or ``--flag/--no-flag``;
- no hand-written list of choices (``a | b | c``) in an option's help: choices are validated
  (``cli.layout.one_of``) and shown as the option's metavar;
- every top-level command sits in the panel :data:`fusecube.cli.layout.PANELS` gives it, and
  every panel is used.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from fusecube.cli.app import app
from fusecube.cli.layout import PANEL_OF, PANELS

ROOT = typer.main.get_command(app)


def _walk(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk(ROOT))


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"}, prog_name="fusecube")
    assert result.exit_code == 0, (path, result.output, result.exception)
    return result.output


def test_the_tree_has_every_command_users_know():
    names = {" ".join(p) for p in COMMANDS if p}
    for expected in ("demo", "run", "status", "fuse train", "cube-model", "batch train",
                     "patches export", "check", "inspect"):
        assert expected in names
    assert "train" not in names and "version" not in names  # renamed / now --version


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "fusecube")
def test_help_fits_the_rules(path):
    command = COMMANDS[path]
    text = _help(path)
    assert f"Usage: fusecube {' '.join(path)}".rstrip() in text
    assert "<bool>" not in text
    summary = (command.help or "").strip().split("\n\n")[0]
    assert summary and "\n" not in summary, f"{path}: summary must be one line: {summary!r}"
    assert len(summary) <= 80 and summary.endswith("."), f"{path}: {summary!r}"
    for param in command.params:
        label = f"{' '.join(path)} {param.name}"
        assert (getattr(param, "help", None) or "").strip(), f"{label}: no help text"
        assert not re.search(r"\w \| \w", param.help), f"{label}: validate choices with one_of"
    if len(path) == 1:
        panel = getattr(command, "rich_help_panel", None)
        assert panel in PANELS and PANEL_OF[path[0]] == panel, (
            f"`fusecube {path[0]}` has no panel: add it to fusecube.cli.layout.PANELS")


def test_top_help_lists_the_panels_in_order_and_every_panel_is_used():
    text = _help(())
    positions = [text.index(f"─ {panel} ") for panel in PANELS]
    assert positions == sorted(positions)
    assert "─ Commands " not in text  # nothing outside a panel
    used = {getattr(c, "rich_help_panel", None) for p, c in COMMANDS.items() if len(p) == 1}
    assert used == set(PANELS)
    assert [n for n in ROOT.list_commands(None)] == [n for n in PANEL_OF if n in ROOT.commands]


def test_version_option_prints_the_version():
    from fusecube import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"fusecube {__version__}"


def _literal(model, field: str) -> set[str]:
    from typing import get_args

    return {a for a in get_args(model.model_fields[field].annotation) if isinstance(a, str)}


def test_validated_choices_are_the_library_s_own():
    """Each option checked by ``one_of`` offers exactly what the library accepts."""
    from typing import get_args

    from fusecube.batch.config import SourceKind
    from fusecube.config import RunConfig
    from fusecube.fusion.neural.network import Architecture
    from fusecube.masks.paddy import PaddyMethod
    from fusecube.ml.sar import FillStrategy
    from fusecube.sources.convert import AccessPattern

    gapfill = _literal(RunConfig, "gapfill")
    expected = {("run", "gapfill"): gapfill, ("demo", "gapfill"): gapfill,
                ("plan", "gapfill"): gapfill, ("fuse train", "arch"): set(get_args(Architecture)),
                ("patches export", "fill"): set(get_args(FillStrategy)),
                ("paddy", "method"): set(get_args(PaddyMethod)),
                ("convert", "access"): set(get_args(AccessPattern)),
                ("batch run", "source"): set(get_args(SourceKind))}
    for (path, name), values in expected.items():
        option = next(p for p in COMMANDS[tuple(path.split())].params if p.name == name)
        assert set(option.callback.choices) == values, (path, name)
