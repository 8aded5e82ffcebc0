"""The one place fusecube picks matplotlib's backend: Agg, files only, no display needed."""

from __future__ import annotations

from fusecube.errors import require


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Raises:
        MissingDependencyError: matplotlib is not installed (the ``viz`` extra).
    """
    matplotlib = require("matplotlib", "viz")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
