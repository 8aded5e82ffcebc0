"""How ``fusecube --help`` reads: commands in panels (start, data, runs, analysis, ML), in order.

Every top-level command belongs to one panel of :data:`PANELS`; a new command is added there
(``tests/test_cli_tree.py`` fails for a command without a panel). Flags are shown as
``--flag`` or ``--flag/--no-flag``, never with a ``<bool>`` value placeholder.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

#: Panels of ``fusecube --help`` in the order shown, each with its commands in order.
PANELS: dict[str, tuple[str, ...]] = {
    "Start here": ("demo", "run", "synth"),
    "Data in": ("fetch", "import-geotiff", "convert", "verify-cube", "inspect", "check"),
    "Runs": ("plan", "status", "pause", "resume", "stop", "batch"),
    "Analysis": ("paddy", "serve"),
    "ML": ("fuse", "cube-model", "patches"),
}

#: A command's panel, by name.
PANEL_OF: dict[str, str] = {name: panel for panel, names in PANELS.items() for name in names}
_ORDER: dict[str, int] = {name: i for i, name in enumerate(PANEL_OF)}


def _command_name(info) -> str:
    """The name typer gives a registered command or group (its own, or the function's)."""
    if info.name:
        return info.name
    callback = getattr(info, "callback", None)
    return callback.__name__.lower().replace("_", "-") if callback else ""


def arrange(app: typer.Typer) -> None:
    """Put each registered command and group of ``app`` into its panel of :data:`PANELS`.

    A command missing from :data:`PANELS` keeps no panel (listed under "Commands"); the
    command-tree test names it.
    """
    for info in [*app.registered_commands, *app.registered_groups]:
        panel = PANEL_OF.get(_command_name(info))
        if panel is not None:
            info.rich_help_panel = panel


def _hide_flag_types(command) -> None:
    """Show flags (and ``--help``) without a ``<bool>`` placeholder: they take no value."""
    params = list(command.params)
    help_option = command.get_help_option(command.context_class(command))
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)


class PanelGroup(TyperGroup):
    """The root command group: commands listed panel by panel, flags shown without a type."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _hide_flag_types(self)

    def list_commands(self, ctx) -> list[str]:
        """Command names in the order of :data:`PANELS` (any unknown command last)."""
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: _ORDER.get(name, len(_ORDER)))


def one_of(*values: str, metavar: str | None = None) -> dict:
    """``typer.Option`` settings accepting only ``values``: a one-line error names them.

    Use as ``typer.Option(help=..., **one_of("cpu", "cuda"))``; ``None`` (option not given)
    passes through. The help shows ``a|b|c``, or ``metavar`` for a long list (the option's
    help text then names the values).
    """
    shown = ", ".join(values)

    def check(value):
        if value is None or value in values:
            return value
        raise typer.BadParameter(f"{value!r} is not one of {shown}.")

    def complete(incomplete: str) -> list[str]:
        return [v for v in values if v.startswith(incomplete)]

    check.choices = values  # type: ignore[attr-defined]
    return {"callback": check, "metavar": metavar or "|".join(values), "autocompletion": complete}


def device_choice(value: str | None) -> str | None:
    """Check a torch device option: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (one-line error)."""
    if value is None or value in ("auto", "cpu", "cuda"):
        return value
    if value.startswith("cuda:") and value[5:].isdigit():
        return value
    raise typer.BadParameter(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N.")


#: ``typer.Option`` settings of a ``--device`` option.
DEVICE = {"callback": device_choice, "metavar": "auto|cpu|cuda[:N]"}
