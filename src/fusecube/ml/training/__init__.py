"""Training the 3-D U-Net cube model with Lightning: data wiring, task, writer and the CLI.

- :mod:`~fusecube.ml.training.data` – :class:`~fusecube.ml.training.data.CubeFusionDataModule`:
  the cubes under ``zarr_root`` as streaming windows, split by spatial blocks.
- :mod:`~fusecube.ml.training.task` – :class:`~fusecube.ml.training.task.CubeFusionTask`
  (LightningModule): the training logic and the run record kept in checkpoints.
- :mod:`~fusecube.ml.training.writer` – :class:`~fusecube.ml.training.writer.FusedCubeWriter`:
  the predicted ``ndvi_fused`` cubes.
- :mod:`~fusecube.ml.training.cli` – :func:`~fusecube.ml.training.cli.cli_main`, the
  LightningCLI behind ``fusecube cube-model fit|validate|predict``.
"""
