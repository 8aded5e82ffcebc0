"""The LightningCLI of the cube model (``fusecube cube-model fit|validate|predict``)."""

from __future__ import annotations

from collections.abc import Sequence

from fusecube.ml.training.data import CubeFusionDataModule
from fusecube.ml.training.task import CubeFusionTask
from fusecube.ml.training.writer import FusedCubeWriter

#: The program name its help shows (it runs as ``fusecube cube-model``).
PROG = "fusecube cube-model"


def _cli_class():
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    class CubeCLI(LightningCLI):
        """LightningCLI with checkpointing, early stopping and the fused-cube writer wired in."""

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.monitor": "val_rmse", "checkpoint.mode": "min",
                                 "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}-{step}"})
            parser.add_lightning_class_args(EarlyStopping, "early_stopping")
            parser.set_defaults({"early_stopping.monitor": "val_rmse", "early_stopping.mode": "min",
                                 "early_stopping.patience": 10, "early_stopping.strict": False})
            parser.add_lightning_class_args(FusedCubeWriter, "writer")

    return CubeCLI


def cli_main(args: Sequence[str] | None = None, *, run: bool = True):
    """``fusecube cube-model fit|validate|predict``: the LightningCLI of the cube model.

    Args:
        args: Command-line arguments (default ``sys.argv[1:]``).
        run: Run the subcommand (False: only build the objects).

    Returns:
        The LightningCLI object (its ``trainer``, ``model``, ``datamodule``).
    """
    import warnings

    cli_class = _cli_class()
    with warnings.catch_warnings():
        # `fusecube cube-model ...` passes its own arguments while sys.argv holds the whole command
        # line (kept intact: the DDP launcher starts the other ranks from it).
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return cli_class(
            CubeFusionTask, CubeFusionDataModule, args=None if args is None else list(args),
            run=run, seed_everything_default=0, save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": PROG, "description": "The 3-D U-Net cube model of fusecube."},
            trainer_defaults={"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                         "init_args": {"save_dir": "runs", "name": "cube_model"}},
                              "log_every_n_steps": 10},
        )
