"""Running the pipeline: blocks, ledger, progress, signals, resume and scale-out."""

from fusecube.runner.execution import RunResult, resume_run, run
from fusecube.runner.ledger import Ledger

__all__ = ["Ledger", "RunResult", "resume_run", "run"]
