"""``fusecube train fit|validate|predict ...``: the cube-model LightningCLI, under the fusecube CLI.

Everything after ``train`` goes to :func:`fusecube.ml.training.cli.cli_main` (LightningCLI
conventions: ``--data.zarr_root``, ``--model.depth``, ``--trainer.precision``, ``--ckpt_path``).
"""

from __future__ import annotations

import typer


def train_cmd(ctx: typer.Context) -> None:
    """Train, validate or apply the 3-D U-Net cube model (try: fusecube train fit --help)."""
    from fusecube.ml.training.cli import cli_main

    cli_main(list(ctx.args))


def register(app: typer.Typer) -> None:
    """Add ``train`` (all its arguments handed to LightningCLI) to the CLI."""
    app.command("train", add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train_cmd)
