"""Band names, scalings and units as openEO, Planetary Computer and Earth Search hand them out.

One table, :data:`BAND_ALIASES`, says which role each known band name plays (``vv``, ``vh``,
``ndvi``, ``red``, ``nir``, ``scl``; matched without regard to case), and
:func:`standardise_bands` turns a dataset of such bands into the cube's variables:

* dims ``t``/``date``/``timestamp`` → ``time``, ``lat``/``lon`` → ``y``/``x``;
* every variable decoded: its nodata value (``_FillValue``, ``missing_value``, ``nodata``) and
  the sentinels of :data:`fusecube.cube.SENTINEL_VALUES` become NaN, then the CF
  ``scale_factor``/``add_offset`` (or ``scale``/``offset``) attributes are applied;
* Sentinel-1 ``vv``/``vh`` in linear sigma0, their units decided **from the values**
  (:func:`backscatter_units`); a ``units`` label that disagrees with the values is an error;
  an integer band is decoded only when its convention is known (see below);
* ``ndvi`` taken as given, or computed as ``(nir - red) / (nir + red)`` from the reflectances
  (digital numbers 0-10000 are recognised from the values when no scale attribute says so);
  where ``scl`` is present, NDVI is kept only on the clear classes
  :data:`fusecube.sources.stac.catalogues.DEFAULT_VALID_SCL` (4, 5, 6, 11), as a STAC fetch
  does; ``red``, ``nir`` and ``scl`` are consumed and not kept.

Integer Sentinel-1 ("compressed dB"): a band with ``scale_factor``/``add_offset`` attributes
is decoded by them (e.g. WorldCereal's int32 dB x 1e-4) and then judged by its values like a
float band. Without attributes the only convention fusecube knows is openEO GFMap's
``compress_backscatter_uint16`` (``s1_encoding="gfmap"``, ``--s1-encoding gfmap``): uint16
``DN = 10 ** ((dB + 83) / 20)`` for DN 1..65534 (0 and 65535 are nodata), decoded as
``dB = 20 log10(DN) - 83``. Any other integer band is refused: its values cannot tell
``linear x 10000`` from ``dB x 100`` or an uncalibrated GRD amplitude.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Literal

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, SENTINEL_VALUES, TIME, VH, VV, X, Y
from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.sources.stac.catalogues import DEFAULT_VALID_SCL
from fusecube.units import from_db

log = logging.getLogger(__name__)

RED, NIR, SCL = "red", "nir", "scl"
"""Roles consumed to make NDVI (never written to a cube)."""

#: Band name (lower case) → role. openEO (CDSE, Terrascope, VITO), Planetary Computer
#: (``sentinel-1-rtc``, ``sentinel-2-l2a``) and Earth Search (``sentinel-2-l2a`` v1 names).
BAND_ALIASES: dict[str, str] = {
    **dict.fromkeys(("vv", "s1-sigma0-vv", "sigma0_vv", "sigma0-vv"), VV),
    **dict.fromkeys(("vh", "s1-sigma0-vh", "sigma0_vh", "sigma0-vh"), VH),
    **dict.fromkeys(("b04", "b4", "red", "s2-l2a-b04", "toc-b04_10m"), RED),
    **dict.fromkeys(("b08", "b8", "nir", "s2-l2a-b08", "toc-b08_10m"), NIR),
    **dict.fromkeys(("ndvi", "s2-l2a-ndvi"), NDVI),
    **dict.fromkeys(("scl", "s2-l2a-scl", "sceneclassification_20m"), SCL),
}

#: Dim name (lower case) → the cube's dim.
DIM_ALIASES: dict[str, str] = {
    **dict.fromkeys(("time", "t", "date", "dates", "timestamp"), TIME),
    **dict.fromkeys(("y", "lat", "latitude", "northing"), Y),
    **dict.fromkeys(("x", "lon", "longitude", "easting"), X),
}

S1Encoding = Literal["gfmap"]
#: Integer Sentinel-1 conventions :func:`standardise_bands` decodes without attributes.
S1_ENCODINGS: tuple[str, ...] = ("gfmap",)

#: openEO GFMap ``compress_backscatter_uint16``: ``dB = 20 log10(DN) - GFMAP_DB_OFFSET``.
GFMAP_DB_OFFSET = 83.0

DB_LABELS = ("db", "decibel", "decibels")
LINEAR_LABELS = ("1", "linear", "power", "intensity")
LINEAR_MEDIAN_MAX = 1.0
"""Linear sigma0 is positive and mostly below 1 (its median is)."""
DB_MEDIAN_MIN = -60.0
"""dB sigma0 is mostly negative (−30..+5); a median below this is not backscatter in dB."""
REFLECTANCE_DN_P99 = 2.0
"""Reflectance whose 99th percentile exceeds this is in digital numbers (0-10000)."""
REFLECTANCE_SCALE = 1e-4
"""Sentinel-2 L2A digital number → reflectance."""
NDVI_DN_P99 = 1000.0
"""An NDVI whose 99th percentile |value| exceeds this is NDVI x 10000."""

_FILL_ATTRS = ("_FillValue", "missing_value", "nodata")
_SCALE_ATTRS = ("scale_factor", "scale")
_OFFSET_ATTRS = ("add_offset", "offset")


def band_role(name: Hashable) -> str | None:
    """The role of a band name (``"S1-SIGMA0-VV"`` → ``"vv"``, ``"B04"`` → ``"red"``), or None."""
    return BAND_ALIASES.get(str(name).lower())


def is_cube_model(ds: xr.Dataset) -> bool:
    """True when ``ds`` already uses the cube's names: ``(time, y, x)`` and no band to rename."""
    if not set(DIMS) <= set(ds.dims):
        return False
    return all(band_role(name) in (None, name) and band_role(name) not in (RED, NIR, SCL)
               for name in ds.data_vars)


# ------------------------------------------------------------------------------- decoding


def _number(attrs: Mapping, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = attrs.get(key)
        if value is not None and np.size(value) == 1:
            try:
                return float(np.asarray(value).ravel()[0])
            except (TypeError, ValueError):
                log.info("ignoring non-numeric %s=%r", key, value)
    return None


def decode_values(var: xr.DataArray) -> tuple[xr.DataArray, bool]:
    """``var`` as float32 physical values: nodata → NaN, then ``scale``/``offset`` applied.

    Returns:
        The decoded values (the attributes used are removed) and whether a scale or offset
        attribute was applied.
    """
    attrs = dict(var.attrs)
    fills = [attrs.pop(k) for k in _FILL_ATTRS if k in attrs]
    scale, offset = _number(attrs, _SCALE_ATTRS), _number(attrs, _OFFSET_ATTRS)
    for key in _SCALE_ATTRS + _OFFSET_ATTRS:
        attrs.pop(key, None)
    fill_values = [float(v) for f in fills for v in np.ravel(f) if np.isfinite(float(v))]
    values = var.where(~var.isin(fill_values)) if fill_values else var
    values = values.astype(np.float32)
    if scale is not None:
        values = values * np.float32(scale)
    if offset is not None:
        values = values + np.float32(offset)
    values = values.where(np.isfinite(values) & ~values.isin(np.asarray(SENTINEL_VALUES, np.float32)))
    values = values.astype(np.float32)
    values.attrs = attrs  # without the nodata and scale attributes: they are applied
    return values, scale is not None or offset is not None


def _sample(var: xr.DataArray, *, max_dates: int = 16, side: int = 128) -> np.ndarray:
    """Finite values of a few dates spread over the series (all dates when those are empty)."""
    n_t = var.sizes.get(TIME, 1)
    step_y = max(1, var.sizes.get(Y, 1) // side)
    step_x = max(1, var.sizes.get(X, 1) // side)
    strided = var.isel({d: slice(None, None, s) for d, s in ((Y, step_y), (X, step_x)) if d in var.dims})
    if TIME in var.dims and n_t > max_dates:
        picked = np.unique(np.linspace(0, n_t - 1, max_dates).round().astype(int))
        values = np.asarray(strided.isel({TIME: picked}).values).ravel()
        values = values[np.isfinite(values)]
        if values.size >= 1000:
            return values
    values = np.asarray(strided.values).ravel()
    return values[np.isfinite(values)]


# ------------------------------------------------------------------------------- Sentinel-1


def _label(var: xr.DataArray) -> Literal["db", "linear"] | None:
    units = str(var.attrs.get("units", "")).strip().lower()
    if units in DB_LABELS:
        return "db"
    if units in LINEAR_LABELS:
        return "linear"
    return None


def backscatter_units(var: xr.DataArray, *, name: str, source: str) -> Literal["db", "linear"]:
    """Linear sigma0 or dB, decided from the values; a disagreeing ``units`` label is an error.

    dB sigma0 is mostly negative (−30..+5: at least half the values below 0, median above
    −60); linear sigma0 is positive (at most 1 % of values below 0) with a median at most 1.
    Values that fit neither, or a ``units`` label (``dB``/``decibel`` or ``1``/``linear``)
    that says the other, raise :class:`~fusecube.errors.CubeSchemaError` naming the variable:
    fusecube never guesses past a contradiction (a wrong label often hides a wrong scale).

    Args:
        var: Decoded backscatter (float, NaN for missing).
        name: The variable's name in the input (for messages).
        source: The input (for messages).

    Returns:
        ``"db"`` or ``"linear"``.
    """
    label = _label(var)
    values = _sample(var)
    if values.size == 0:
        return label or "linear"
    negative, median = float(np.mean(values < 0)), float(np.median(values))
    if negative >= 0.5 and median >= DB_MEDIAN_MIN:
        found: Literal["db", "linear"] = "db"
    elif negative <= 0.01 and 0 < median <= LINEAR_MEDIAN_MAX:
        found = "linear"
    else:
        raise CubeSchemaError(
            f"Variable {name!r} of {source} is neither dB sigma0 (mostly negative, −30..+5) nor linear "
            f"sigma0 (positive, mostly below 1): median {median:.4g}, {negative:.0%} negative. If it is "
            "scaled (e.g. linear x 10000 or dB x 100), give it scale_factor/add_offset attributes, "
            "or write it as float dB or linear sigma0.")
    if label is not None and label != found:
        described = "dB (mostly negative)" if found == "db" else "linear sigma0 (positive, mostly below 1)"
        raise CubeSchemaError(
            f"Variable {name!r} of {source} is labelled units={var.attrs.get('units')!r} but its values "
            f"are {described}: median {median:.4g}, {negative:.0%} negative. fusecube decides from the "
            f"values and refuses a label that contradicts them: fix the label (units='dB' or '1') "
            "or the values (a wrong scale_factor?).")
    return found


def decode_backscatter(var: xr.DataArray, *, name: str, source: str,
                       s1_encoding: S1Encoding | None = None) -> xr.DataArray:
    """A Sentinel-1 band as float32 linear sigma0 (NaN for missing and non-positive values).

    Args:
        var: The band as read (``mask_and_scale=False`` keeps its attributes for this step).
        name: The band's name in the input (for messages).
        source: The input (for messages).
        s1_encoding: ``"gfmap"`` for openEO GFMap uint16 bands without attributes (module
            docstring); None decodes by the attributes only.

    Raises:
        CubeSchemaError: An integer band without scale attributes or known encoding, or
            values that are neither dB nor linear, or a contradicting units label.
        ConfigError: An unknown ``s1_encoding``, or one given for a float band.
    """
    if s1_encoding is not None and s1_encoding not in S1_ENCODINGS:
        raise ConfigError(f"Unknown S1 encoding {s1_encoding!r}; fusecube knows {list(S1_ENCODINGS)} "
                          "(omit it for float bands or bands with scale_factor/add_offset).")
    integer = var.dtype.kind in "iu"
    has_scale = any(k in var.attrs for k in _SCALE_ATTRS + _OFFSET_ATTRS)
    if s1_encoding == "gfmap":
        if not integer:
            raise ConfigError(f"s1_encoding 'gfmap' decodes uint16 bands, but {name!r} of {source} is "
                              f"{var.dtype}: drop --s1-encoding for float bands.")
        dn = var.where((var >= 1) & (var <= 65534)).astype(np.float32)
        db = (20.0 * np.log10(dn) - GFMAP_DB_OFFSET).astype(np.float32)
        db.attrs = {k: v for k, v in var.attrs.items() if k not in _FILL_ATTRS}
        db.attrs["units"] = "dB"
        values = db
    elif integer and not has_scale:
        raise CubeSchemaError(
            f"Variable {name!r} of {source} holds integers ({var.dtype}) without scale_factor/add_offset "
            "attributes, so its convention is unknown (linear x 10000? dB x 100? GRD amplitude?). "
            "Give it scale_factor/add_offset attributes, pass --s1-encoding gfmap for openEO GFMap "
            "uint16 (DN = 10**((dB + 83) / 20)), or write it as float dB or linear sigma0.")
    else:
        values, _ = decode_values(var)
    units = backscatter_units(values, name=name, source=source)
    if units == "db":
        log.info("%s: %s holds dB; converting to linear sigma0", source, name)
        values = from_db(values).astype(np.float32)
    return values.where(values > 0).astype(np.float32)


# ------------------------------------------------------------------------------- Sentinel-2


def reflectance(var: xr.DataArray, *, name: str, source: str) -> xr.DataArray:
    """A red or NIR band as float32 reflectance: attributes applied, else DN 0-10000 detected.

    Without scale attributes a band whose 99th percentile exceeds
    :data:`REFLECTANCE_DN_P99` is taken for digital numbers (x :data:`REFLECTANCE_SCALE`;
    0 is L2A nodata). The L2A offset of processing baseline 04.00 (−1000 DN) is applied only
    when the band carries it as ``add_offset``/``offset``.
    """
    values, scaled = decode_values(var)
    if not scaled:
        sample = _sample(values)
        if sample.size and float(np.percentile(sample, 99)) > REFLECTANCE_DN_P99:
            log.info("%s: %s holds digital numbers; reflectance = DN x %g", source, name, REFLECTANCE_SCALE)
            values = values.where(values != 0) * np.float32(REFLECTANCE_SCALE)
    return values.astype(np.float32)


def ndvi_values(var: xr.DataArray, *, name: str, source: str) -> xr.DataArray:
    """A given NDVI band decoded; integer NDVI x 10000 recognised, other scalings refused."""
    values, scaled = decode_values(var)
    sample = _sample(values)
    if sample.size == 0:
        return values
    p99 = float(np.percentile(np.abs(sample), 99))
    if not scaled and var.dtype.kind in "iu" and var.dtype.itemsize >= 2 and p99 > NDVI_DN_P99:
        log.info("%s: %s holds NDVI x 10000; rescaling", source, name)
        values = values * np.float32(REFLECTANCE_SCALE)
    elif p99 > 1.5:
        raise CubeSchemaError(
            f"Variable {name!r} of {source} reaches |NDVI| {p99:.4g} (99th percentile); NDVI lies "
            "within [-1, 1]. Give it scale_factor/add_offset attributes (e.g. CropSAR's byte NDVI), "
            "or write it as float NDVI.")
    return values.astype(np.float32)


def ndvi_from_bands(red: xr.DataArray, nir: xr.DataArray) -> xr.DataArray:
    """``(nir - red) / (nir + red)`` from reflectances; NaN where undefined or outside [-1, 1]."""
    total = nir + red
    ndvi = ((nir - red) / total.where(total > 0)).astype(np.float32)
    return ndvi.where((ndvi >= -1) & (ndvi <= 1))


def clear_mask(scl: xr.DataArray, valid: tuple[int, ...] = DEFAULT_VALID_SCL) -> xr.DataArray:
    """True where the scene classification is a clear class (NaN/nodata counts as not clear)."""
    return scl.isin(list(valid))


# ------------------------------------------------------------------------------- the dataset


def rename_dims(ds: xr.Dataset, *, source: str) -> xr.Dataset:
    """Dims (and their coordinates) renamed to ``time``, ``y``, ``x`` by :data:`DIM_ALIASES`."""
    rename = {}
    for dim in ds.dims:
        target = DIM_ALIASES.get(str(dim).lower())
        if target is not None and target != dim:
            if target in ds.dims or target in rename.values():
                raise CubeSchemaError(f"{source} has dims {sorted(map(str, ds.dims))}: more than one "
                                      f"of them means {target!r}; drop or rename one.")
            rename[dim] = target
    ds = ds.rename(rename)
    if not set(DIMS) <= set(ds.dims):
        raise CubeSchemaError(f"{source} has dims {sorted(map(str, ds.dims))}; a cube needs "
                              f"{list(DIMS)} (t/date/timestamp and lat/lon are renamed). Rename the dims.")
    return ds


def _roles(ds: xr.Dataset, *, source: str) -> dict[str, Hashable]:
    found: dict[str, Hashable] = {}
    for name in ds.data_vars:
        role = band_role(name)
        if role is None:
            continue
        if role in found:
            raise CubeSchemaError(f"{source} has both {found[role]!r} and {name!r}, which both mean "
                                  f"{role!r}; drop one of them.")
        found[role] = name
    return found


def standardise_bands(ds: xr.Dataset, *, source: str = "the input",
                      s1_encoding: S1Encoding | None = None) -> xr.Dataset:
    """Rename, decode and convert the bands of ``ds`` into the cube's variables.

    Args:
        ds: The input as opened (best with ``mask_and_scale=False`` so that scale and nodata
            attributes are still there; already decoded data works too).
        source: The input, for messages.
        s1_encoding: Convention of integer S1 bands without attributes (module docstring).

    Returns:
        ``vv``/``vh`` (linear sigma0), ``ndvi`` and any other ``(time, y, x)`` or ``(y, x)``
        variable (decoded, float32, lower-case name), on dims renamed to ``time``, ``y``, ``x``
        (not transposed). ``red``, ``nir`` and ``scl`` are consumed; ``scl`` is kept when
        there is no NDVI to mask (for :func:`mask_ndvi_with_scl`).

    Raises:
        CubeSchemaError: Dims that do not name time, y and x; two bands with one role; values
            whose units or scale cannot be trusted (see :func:`decode_backscatter`).
    """
    ds = rename_dims(ds, source=source)
    roles = _roles(ds, source=source)
    keep: dict[Hashable, xr.DataArray] = {}
    for name, var in ds.data_vars.items():
        if set(var.dims) not in (set(DIMS), {Y, X}):
            log.info("%s: dropping %s with dims %s", source, name, var.dims)
            continue
        role = band_role(name)
        if role in (VV, VH):
            keep[role] = decode_backscatter(var, name=str(name), source=source, s1_encoding=s1_encoding)
        elif role == NDVI:
            keep[role] = ndvi_values(var, name=str(name), source=source)
        elif role is None:
            target = str(name).lower()
            if target in keep or band_role(target) is not None:
                target = str(name)
            keep[target] = decode_values(var)[0]
    if NDVI not in keep and RED in roles and NIR in roles:
        red = reflectance(ds[roles[RED]], name=str(roles[RED]), source=source)
        nir = reflectance(ds[roles[NIR]], name=str(roles[NIR]), source=source)
        keep[NDVI] = ndvi_from_bands(red, nir)
        log.info("%s: ndvi computed from %s and %s", source, roles[RED], roles[NIR])
    if SCL in roles:
        scl, _ = decode_values(ds[roles[SCL]])
        if NDVI in keep:
            keep[NDVI] = keep[NDVI].where(clear_mask(scl))
            log.info("%s: ndvi kept on clear SCL classes %s only", source, list(DEFAULT_VALID_SCL))
        else:  # an S2 20 m file beside a 10 m one: applied by mask_ndvi_with_scl
            keep[SCL] = scl
    return xr.Dataset(keep, attrs=ds.attrs)


def mask_ndvi_with_scl(datasets: list[xr.Dataset]) -> list[xr.Dataset]:
    """The ``scl`` of one input applied to the ``ndvi`` of another, on the dates both have.

    The inputs must already share a grid. ``scl`` is dropped from every input; NDVI on a date
    the SCL input lacks is kept as it is.
    """
    scl = next((ds[SCL] for ds in datasets if SCL in ds.data_vars), None)
    if scl is None:
        return datasets
    out = []
    for ds in datasets:
        ds = ds.drop_vars(SCL, errors="ignore")
        if NDVI in ds.data_vars:
            shared = scl.reindex({TIME: ds[TIME].values})
            has_scl = shared.notnull().any(dim=[d for d in shared.dims if d != TIME])
            ds = ds.assign({NDVI: ds[NDVI].where(clear_mask(shared) | ~has_scl)})
            log.info("ndvi kept on clear SCL classes %s only (SCL from another input)",
                     list(DEFAULT_VALID_SCL))
        out.append(ds)
    return out
