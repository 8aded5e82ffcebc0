"""fusecube: gap-free NDVI datacubes and multi-season rice calendars from Sentinel-1/2."""

__version__ = "0.1.0"

from fusecube.cube import read_cube, validate_cube, write_cube  # noqa: E402
from fusecube.errors import FusecubeError  # noqa: E402
from fusecube.sources.readers import load  # noqa: E402

__all__ = ["FusecubeError", "__version__", "load", "read_cube", "validate_cube", "write_cube"]
