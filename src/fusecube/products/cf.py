"""CF-1.8 conventions of fusecube's NetCDF and zarr products: grid mapping, units, flags.

GDAL (and so QGIS) places a NetCDF or zarr variable by its ``grid_mapping`` attribute, which
names the ``spatial_ref`` coordinate holding the CRS (``crs_wkt``, ``spatial_ref``) and the
``GeoTransform``; ``x``/``y`` carry ``standard_name``, ``axis`` and ``units``. Every variable
gets ``units`` and ``long_name`` (attributes a stage or another writer set are kept), class
layers get ``flag_values``/``flag_meanings``, and the season count is stored as ``uint8`` with
nodata :data:`COUNT_NODATA` (xarray still decodes it to float with NaN). One set of functions
serves ``phenology.nc`` (:func:`cf_dataset`) and ``result.zarr`` (:func:`describe_store`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import CF_ATTRS, PADDY_MASK, SEASON, X, Y
from fusecube.grid.periods import to_days

#: Name of the grid-mapping coordinate (odc-geo and rioxarray use the same).
GRID_MAPPING = "spatial_ref"
#: Nodata of the uint8 season count (not paddy, or not analysed).
COUNT_NODATA = 255
SEASON_COUNT = "season_count"

#: Units of result variables the stages leave without them (UDUNITS spelling).
UNITS: dict[str, str] = {
    "length": "day", "integral": "day", "greenup_rate": "day-1", "senescence_rate": "day-1",
    "base_value": "1", "peak_value": "1", "amplitude": "1", SEASON_COUNT: "1", PADDY_MASK: "1",
    "season_number": "1", "season_year": "1",
}
#: Index coordinates left without units: GDAL reports ``season#units=1`` as a number and
#: rioxarray's ``open_rasterio("NETCDF:...")`` then fails on it.
NO_UNITS = ("season", "year")
LONG_NAMES: dict[str, str] = {
    "season": "season slot (0-based; see season_label)",
    "season_number": "season number within its agricultural year (1 = first)",
    "season_year": "agricultural year of the season (the calendar year it starts in)",
    "year": "agricultural year (the calendar year it starts in)",
    "period_start": "first day of the compositing period",
    "time": "centre of the compositing period",
}
_COUNT_WORDS = ("no_season", "one_season", "two_seasons", "three_seasons", "four_seasons",
                "five_seasons", "six_seasons")


def class_flags(name: str, *, max_count: int = 3) -> dict[str, object]:
    """CF ``flag_values``/``flag_meanings`` of fusecube's own class layers ({} for others)."""
    if name == SEASON_COUNT:
        return {"flag_values": np.arange(max_count + 1, dtype=np.uint8),
                "flag_meanings": " ".join(_COUNT_WORDS[: max_count + 1])}
    if name == PADDY_MASK:
        return {"flag_values": np.array([0, 1], dtype=np.uint8), "flag_meanings": "other paddy"}
    return {}


def axis_attrs(geobox: GeoBox) -> dict[str, dict[str, str]]:
    """CF attributes of the ``x``/``y`` coordinates of a grid (projected or geographic)."""
    if geobox.crs is not None and geobox.crs.geographic:
        return {X: {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
                    "axis": "X"},
                Y: {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                    "axis": "Y"}}
    return {X: {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of projection",
                "units": "m", "axis": "X"},
            Y: {"standard_name": "projection_y_coordinate", "long_name": "y coordinate of projection",
                "units": "m", "axis": "Y"}}


def variable_attrs(name: str, var: xr.DataArray, *, max_count: int = 3) -> dict[str, object]:
    """The CF attributes ``var`` should carry: its own first, then fusecube's defaults.

    Datetime variables get no ``units`` here (their encoding writes ``days since 1970-01-01``).
    A variable nobody gave units is dimensionless (``"1"``): NDVI, fractions, flags, codes.
    """
    attrs: dict[str, object] = {"long_name": LONG_NAMES.get(name, name.replace("_", " "))}
    if not np.issubdtype(var.dtype, np.datetime64):
        attrs["units"] = UNITS.get(name, "1")
    attrs.update(CF_ATTRS.get(name, {}))
    attrs.update(class_flags(name, max_count=max_count))
    attrs.update(var.attrs)
    if name in NO_UNITS:
        attrs.pop("units", None)
    if Y in var.dims and X in var.dims and name not in (X, Y):
        attrs["grid_mapping"] = GRID_MAPPING
    return attrs


def global_attrs(title: str, *, start_month: int | None = None) -> dict[str, object]:
    """Global attributes of a product: title, source, history, version, conventions."""
    from fusecube import __version__

    attrs: dict[str, object] = {  # no time stamp: a resumed run's store is bit-identical
        "Conventions": "CF-1.8", "title": title,
        "source": "fusecube: Sentinel-1/Sentinel-2 fusion, Whittaker smoothing, rice phenology",
        "history": f"written by fusecube {__version__} (run.json records when and how)",
        "fusecube_version": __version__,
    }
    if start_month is not None:
        attrs["year_start_month"] = int(start_month)
    return attrs


def georeference(ds: xr.Dataset, geobox: GeoBox) -> xr.Dataset:
    """``ds`` with the grid's ``x``/``y`` and ``spatial_ref`` coordinates and their CF attributes."""
    coords = odc.geo.xr.xr_coords(geobox, crs_coord_name=GRID_MAPPING, dims=(Y, X))
    for dim, attrs in axis_attrs(geobox).items():
        coords[dim] = coords[dim].assign_attrs(attrs)
    return ds.assign_coords(coords)


def cf_dataset(ds: xr.Dataset, geobox: GeoBox, *, title: str,
               start_month: int | None = None) -> xr.Dataset:
    """``ds`` georeferenced, every variable and coordinate with CF attributes, global attributes.

    Attributes already on a variable (a stage's ``long_name``, another layer's
    ``flag_values``) win over fusecube's defaults.
    """
    ds = georeference(ds, geobox)
    max_count = int(ds["season_number"].max()) if "season_number" in ds.coords else 3
    for name in [*ds.data_vars, *ds.coords]:
        if name in (X, Y, GRID_MAPPING) or ds[name].dtype.kind in "OUS":
            continue
        ds[name].attrs = variable_attrs(str(name), ds[name], max_count=max_count)
    ds.attrs.update(global_attrs(title, start_month=start_month))
    return ds


def storage_encoding(ds: xr.Dataset) -> dict[str, dict]:
    """On-disk encoding fusecube's CF products share: the season count as uint8, nodata 255."""
    if SEASON_COUNT not in ds or not np.issubdtype(ds[SEASON_COUNT].dtype, np.floating):
        return {}
    return {SEASON_COUNT: {"dtype": "uint8", "_FillValue": COUNT_NODATA}}


#: How datetime variables are stored: float days, NaN for no date (xarray reads them back as dates).
DATE_UNITS = "days since 1970-01-01"


def dates_as_days(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its datetime data variables as float days since 1970-01-01 (NaT → NaN).

    The attributes say so (``units``, ``calendar``), so xarray and GDAL read them as dates again.
    Encoding here, in one vectorised step, spares xarray's datetime encoder, which sorts every
    value to infer units before it uses the ones given (about 1.5 s of a Demak-size run).
    """
    dates = [name for name, var in ds.data_vars.items()
             if np.issubdtype(var.dtype, np.datetime64)]
    if not dates:
        return ds
    out = ds.copy()
    for name in dates:
        var = ds[name]
        out[name] = var.copy(data=to_days(var.values))
        out[name].attrs.update(units=DATE_UNITS, calendar="proleptic_gregorian")
        out[name].encoding = {k: v for k, v in var.encoding.items()
                              if k not in ("units", "calendar", "dtype")}
    return out


def _json_value(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def describe_store(store: Path, geobox: GeoBox, *, start_month: int) -> None:
    """Add the CF attributes of :func:`cf_dataset` to a zarr store in place and consolidate it.

    Only metadata changes (no chunk is read or written). After this, ``xr.open_zarr(store)``
    opens without a consolidated-metadata warning and GDAL/odc-geo find the grid.

    Args:
        store: A zarr v3 store fusecube wrote (``result.zarr``).
        geobox: Its grid.
        start_month: First month of the agricultural year (a global attribute); it also
            labels the season slots (``labels`` of ``season``, ``season_labels`` of the store).
    """
    import zarr

    from fusecube.stages.phenology import season_labels as slot_labels

    ds = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None, decode_timedelta=False)
    season_labels = slot_labels(ds, start_month) if "season_year" in ds.coords else None
    described = cf_dataset(ds, geobox, title="fusecube run result (time series and seasons)",
                           start_month=start_month)
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    for name in group.array_keys():
        if name not in described.variables:
            continue
        wanted = dict(described[name].attrs)
        if name in (X, Y):
            wanted.update(axis_attrs(geobox)[name])
        if name == SEASON and season_labels is not None:
            wanted["labels"] = list(season_labels)
        current = dict(group[name].attrs)
        new = {k: _json_value(v) for k, v in wanted.items() if k not in current or k == "grid_mapping"}
        if new:
            group[name].attrs.update(new)
    extra: Mapping[str, object] = {"season_labels": season_labels} if season_labels else {}
    group.attrs.update({k: _json_value(v) for k, v in {**described.attrs, **extra}.items()})
    with warnings.catch_warnings():  # zarr: "not part of the v3 spec"; xarray warns without it
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store, zarr_format=3)
