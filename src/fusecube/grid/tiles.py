"""Square tiles of a grid: the blocks a run processes and the tiles a scene is generated in."""

from __future__ import annotations

from collections.abc import Iterator

from odc.geo.geobox import GeoBox, GeoboxTiles

Tile = tuple[tuple[int, int], tuple[slice, slice]]


def tile_slices(geobox: GeoBox, size: int) -> Iterator[Tile]:
    """Tile index and ``(y, x)`` pixel slices of each ``size`` x ``size`` tile, row by row.

    Tiles on the right and bottom edges are cut to the grid (odc-geo's ``GeoboxTiles``).
    """
    tiles = GeoboxTiles(geobox, (size, size))
    ny, nx = tiles.shape.yx
    for iy in range(ny):
        for ix in range(nx):
            ys, xs = tiles.roi[iy, ix]
            yield (iy, ix), (ys, xs)
