"""Running the pipeline: blocks, progress, resume and scale-out."""

from fusecube.runner.blocks import RunResult, run

__all__ = ["RunResult", "run"]
