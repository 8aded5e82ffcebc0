"""Every user-facing failure of fusecube, each message naming the input and the fix."""

from __future__ import annotations


class FusecubeWarning(UserWarning):
    """A recoverable problem the user should know about (turned into an error in tests)."""


class FusecubeError(Exception):
    """Base of all fusecube errors; the CLI prints the message and exits with ``exit_code``."""

    exit_code = 2


class CubeSchemaError(FusecubeError, ValueError):
    """A cube does not follow the fusecube data model (dims, dtypes, time, CRS, values)."""


class GridError(FusecubeError, ValueError):
    """An area of interest or grid cannot be resolved to one GeoBox (ambiguous, empty, wrong CRS)."""


class InputFileError(FusecubeError, OSError):
    """An input file is missing, unreadable or corrupt."""


class ConfigError(FusecubeError, ValueError):
    """A run configuration is invalid."""


class SourceError(FusecubeError, RuntimeError):
    """A data source (STAC catalogue, GeoTIFF folder) failed to deliver what was asked."""


class MaskError(FusecubeError, ValueError):
    """A mask cannot be applied to the cube (no overlap, missing CRS, nothing left after repair)."""


class GateFailed(FusecubeError, ValueError):
    """A quality gate failed in strict mode.

    Attributes:
        gate: Name of the gate.
        value: The measured value.
        threshold: The threshold it violated.
    """

    def __init__(self, gate: str, value: float, threshold: float, message: str) -> None:
        self.gate = gate
        self.value = value
        self.threshold = threshold
        super().__init__(message)


class ResultGateFailed(GateFailed):
    """A run's results are empty or implausible (a result gate); the previous output is kept."""


class RunInterrupted(FusecubeError, RuntimeError):
    """A run was stopped by a signal or a controller; it can be resumed."""

    exit_code = 130


class BudgetExceeded(RunInterrupted):
    """A run, fetch or batch stopped at its --max-bytes or --max-walltime cap; it can be resumed."""

    exit_code = 75  # EX_TEMPFAIL: try again (resume) later


class MissingDependencyError(FusecubeError, ImportError):
    """An optional dependency is needed for this feature."""


class FusionModelError(FusecubeError, ValueError):
    """A fusion model cannot be trained or applied (too few observations, wrong features, device)."""


def require(module: str, extra: str):
    """Import an optional dependency or raise an error that prints the pip command.

    Args:
        module: Importable module name, e.g. ``"torch"``.
        extra: The fusecube extra that provides it, e.g. ``"ml"``.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without extras
        raise MissingDependencyError(
            f"This feature needs the optional package {module!r}. "
            f"Install it with: pip install 'fusecube[{extra}]'"
        ) from exc


class PatchError(FusecubeError, ValueError):
    """ML patch export, preprocessing or splitting was asked for something impossible."""


class PatchFileError(FusecubeError, OSError):
    """A patch set on disk is missing, incomplete or does not match its metadata."""


class LedgerError(FusecubeError, RuntimeError):
    """The run ledger cannot be opened, or has no such run, or the run cannot be taken over."""


class OutputWriteError(FusecubeError, OSError):
    """An output cannot be written (folder not writable, disk full); earlier outputs are kept."""


class ApiError(FusecubeError, ValueError):
    """An HTTP request to the fusecube API cannot be served (bad parameter, unknown run, too large).

    Attributes:
        status_code: The HTTP status the API answers with (400, 401, 404, 409, 413, 429, 503, ...).
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        self.status_code = status_code
        super().__init__(message)


class IntegrityError(FusecubeError, OSError):
    """A written cube does not match its source or its checksum manifest (corrupt or changed)."""


class CubeModelError(FusecubeError, ValueError):
    """A cube model (3-D U-Net) cannot be trained or applied with the given data or options."""


class BatchInputError(FusecubeError, ValueError):
    """An AOI list for ``fusecube batch`` cannot be used (unreadable, missing columns, duplicate ids)."""


class BatchStateError(FusecubeError, RuntimeError):
    """A batch folder holds another batch, or a resumed batch was given different settings."""


class AOITimeBudgetExceeded(FusecubeError, TimeoutError):
    """One AOI of a batch ran past its time budget; it is recorded as failed and can be retried."""
