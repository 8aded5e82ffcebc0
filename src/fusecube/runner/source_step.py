"""The run's ``source`` step: the input cube (and the synthetic truth) a run reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fusecube.config import CubeSource, RunConfig, SyntheticSource

Progress = Callable[[str, int, int], None]


def prepare_source(config: RunConfig, progress: Progress | None = None) -> tuple[Path, Path | None]:
    """Make sure the input cube exists; returns ``(cube path, truth path or None)``.

    A zarr cube is read where it lies; every other source (synthetic scene, GeoTIFF stack,
    STAC) is written once into ``<out>/input/cube.zarr`` by its reader
    (:mod:`fusecube.sources.readers`), so blocks, resume and workers read one store.
    """
    from fusecube.sources.readers import reader_for

    source = config.source
    if isinstance(source, CubeSource):
        truth = source.path.with_name("truth.zarr")
        return source.path, truth if truth.exists() else None
    cb = (lambda stage, done, total: progress(stage, done, total)) if progress else None
    reader = reader_for(source)
    if isinstance(source, SyntheticSource):
        paths = reader.write(config.out / "input",
                             progress=(lambda done, total: cb("synth", done, total)) if cb else None)
        return paths["cube"], paths["truth"]
    return reader.write(config.out / "input" / "cube.zarr", progress=cb), None


def existing_source(config: RunConfig) -> tuple[Path, Path | None]:
    """The input paths a finished ``source`` stage left (no synthesis or fetch again on resume)."""
    if isinstance(config.source, CubeSource):
        return prepare_source(config)
    inp = config.out / "input"
    truth = inp / "truth.zarr"
    return inp / "cube.zarr", truth if truth.exists() else None
