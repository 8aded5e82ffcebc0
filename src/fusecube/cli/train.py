"""``fusecube cube-model fit|validate|test|predict``: the 3-D U-Net cube model (LightningCLI).

Three commands train a model, each a different one:

- ``fusecube fuse train``: the per-pixel S1→NDVI fusion model that ``--gapfill fusion`` uses;
- ``fusecube cube-model fit``: the 3-D U-Net cube model on many cubes (LightningCLI, GPUs);
- ``fusecube batch train``: a tiny VV→VH model showing a batch's tiles can be learnt from.

Everything after the subcommand goes to :func:`fusecube.ml.training.cli.cli_main`
(LightningCLI conventions: ``--data.zarr_root``, ``--model.depth``, ``--trainer.precision``,
``--ckpt_path``).
"""

from __future__ import annotations

import typer

#: LightningCLI's subcommands.
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def cube_model_cmd(ctx: typer.Context) -> None:
    """Fit, validate or apply the 3-D U-Net cube model (LightningCLI, GPUs).

    \b
    Options that matter most (all: fusecube cube-model fit --help):
      --data.zarr_root DIR     the cubes, one cube.zarr per sub-folder
      --model.depth N          U-Net levels (--model.width: channels)
      --trainer.max_epochs N   passes over the data
      --trainer.devices N      GPUs (--trainer.precision bf16-mixed)
      --ckpt_path PATH         resume a fit; the model to apply
      --writer.output_dir DIR  predict: where the fused cubes go
      -c CONFIG                a YAML of them (fit --print_config)

    The gap-fill model of runs is trained by `fusecube fuse train`.
    """  # noqa: D301 (\b keeps click from re-wrapping the table)
    args = list(ctx.args)
    if not args:
        typer.echo(ctx.get_help())
        raise typer.Exit()
    if args[0] not in SUBCOMMANDS and not args[0].startswith("-"):
        raise typer.BadParameter(f"{args[0]!r} is not one of {', '.join(SUBCOMMANDS)}.",
                                 param_hint="SUBCOMMAND")
    from fusecube.ml.training.cli import cli_main

    cli_main(args)


def register(app: typer.Typer) -> None:
    """Add ``cube-model`` (its arguments handed to LightningCLI) to the CLI."""
    app.command("cube-model", options_metavar="fit|validate|test|predict [OPTIONS]",
                context_settings={
                    "allow_extra_args": True, "ignore_unknown_options": True,
                    "allow_interspersed_args": False})(cube_model_cmd)
