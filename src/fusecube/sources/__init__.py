"""Data sources: synthetic scenes, STAC catalogues, GeoTIFF stacks, zarr/NetCDF stores.

Every source implements the reader protocol of :mod:`fusecube.sources.readers`;
:func:`fusecube.load` opens any of them as a cube.
"""

from fusecube.sources.gdal_net import enable_network_stats

enable_network_stats()
