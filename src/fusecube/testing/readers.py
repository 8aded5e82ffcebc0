"""A fake :class:`~fusecube.sources.readers.Reader` for tests: a dataset in memory that counts reads."""

from __future__ import annotations

import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import TIME
from fusecube.sources.readers import CubePlan, on_geobox


class FakeReader:
    """Serves ``ds`` like a real source: :meth:`plan` never reads, :meth:`read` counts its calls."""

    def __init__(self, ds: xr.Dataset, description: str = "fake source") -> None:
        self.ds, self.description, self.reads = ds, description, 0

    def plan(self) -> CubePlan:
        """What the source would deliver (see :meth:`Reader.plan`)."""
        return CubePlan(self.ds.odc.geobox, self.ds[TIME].values, self.description)

    def read(self, geobox: GeoBox | None = None, *,
             chunks: dict[str, int] | None = None) -> xr.Dataset:
        """The cube on ``geobox`` (see :meth:`Reader.read`)."""
        self.reads += 1
        ds = self.ds.chunk(chunks) if chunks is not None else self.ds
        return on_geobox(ds, geobox)
