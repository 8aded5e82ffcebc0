"""Run configuration: pydantic models, loadable from YAML/TOML/JSON and overridable by flags."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fusecube.errors import ConfigError, InputFileError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticSource(_Model):
    """Generate the embedded Demak-like scene."""

    kind: Literal["synthetic"] = "synthetic"
    width: int = Field(671, ge=8, description="Pixels along x.")
    height: int = Field(893, ge=8, description="Pixels along y.")
    seed: int = Field(0, description="Random seed.")
    n_periods: int = Field(62, ge=6, description="Number of 12-day periods.")
    radar_skill: float = Field(1.0, ge=0.0, le=1.0, description="How much of the radar's temporal "
                               "variation follows the vegetation: 1 flooded rice, 0 none.")


class CubeSource(_Model):
    """Read an existing zarr cube."""

    kind: Literal["cube"] = "cube"
    path: Path = Field(description="Path to a zarr cube written by fusecube.")


class GeoTiffSource(_Model):
    """Import a folder of per-period or per-date GeoTIFFs (``fusecube import-geotiff``)."""

    kind: Literal["geotiff"] = "geotiff"
    folder: Path = Field(description="Folder of period_NN.tif or dated GeoTIFFs.")
    start: str | None = Field(None, description="First day of period 1 (per-period files).")
    period_days: int = Field(12, ge=1, description="Period length in days.")
    dates_file: Path | None = Field(None, description="Period start dates, one per line.")
    aoi: str | None = Field(None, description="Crop to this bbox or vector file.")
    resolution: float | None = Field(None, gt=0, description="Pixel size in metres (default "
                                     "native).")
    pattern: str = Field("*.tif", description="File name pattern in the folder.")
    ndvi_scale: float | None = Field(None, gt=0, description="Divide stored NDVI by this "
                                     "(e.g. 10000 for integer NDVI).")


class StacSource(_Model):
    """Fetch S1 + S2 from a STAC API over an AOI, window reads only (``fusecube fetch``).

    The one STAC configuration: ``fusecube run`` (as its source), ``fusecube fetch`` (from
    flags) and ``fusecube batch`` (per AOI, via :meth:`fusecube.batch.config.BatchConfig.stac`)
    all turn it into the same search and read options.
    """

    kind: Literal["stac"] = "stac"
    aoi: str | None = Field(None, description="bbox 'minx,miny,maxx,maxy' (in aoi_crs) or a "
                            "vector file; batch gives each AOI's own.")
    start: str = Field(description="First day (YYYY-MM-DD).")
    end: str = Field(description="Last day (YYYY-MM-DD).")
    catalogue: str = Field("planetary-computer", description="planetary-computer, earth-search, "
                           "cdse, or a STAC API URL.")
    stac_url: str | None = Field(None, description="Another root for the catalogue's "
                                 "collections (a mirror).")
    s2_collection: str | None = Field(None, description="Sentinel-2 L2A collection id.")
    s2_assets: str | None = Field(None, description="Asset names by role: red=B04,nir=B08,scl=SCL.")
    s1_collection: str | None = Field(None, description="Sentinel-1 collection id.")
    s1_assets: str | None = Field(None, description="Asset names by role: vv=vv,vh=vh.")
    s1_units: Literal["linear", "db"] | None = Field(None, description="Units of the S1 assets.")
    no_s1: bool = Field(False, description="Skip Sentinel-1.")
    no_s2: bool = Field(False, description="Skip Sentinel-2.")
    aoi_crs: str = Field("EPSG:4326", description="CRS of a bbox AOI.")
    resolution: float = Field(10.0, gt=0, description="Pixel size in metres (UTM grid).")
    period_days: int = Field(12, ge=1, description="Compositing period in days.")
    max_cloud: float = Field(80.0, ge=0, le=100, description="Skip S2 items above this cloud %.")
    retries: int = Field(5, ge=1, description="Tries per search and per asset read.")
    retry_backoff_s: float = Field(0.5, ge=0, description="Delay before the second try; doubles.")
    max_backoff_s: float = Field(30.0, ge=0, description="Longest delay between tries.")
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one request.")
    gdal_retries: int = Field(3, ge=0, description="Retries GDAL makes per HTTP range request.")
    workers: int = Field(2, ge=1, description="Items read in parallel.")
    fail_on_error: bool = Field(False, description="Stop at the first item that fails.")
    max_pages: int = Field(2000, ge=1, description="Most result pages one search may follow.")
    max_items: int = Field(50000, ge=1, description="Most items one search may return.")
    max_search_s: float = Field(900.0, gt=0, description="Most seconds one search may take.")
    max_retry_s: float = Field(600.0, gt=0, description="No new try of a search or an asset "
                               "read starts after this many seconds.")
    sign: str | None = Field(None, description="URL signing: 'planetary-computer' or "
                             "'module:function'.")


Source = SyntheticSource | CubeSource | GeoTiffSource | StacSource
"""Every kind of input a run reads (``source.kind`` picks one)."""


class SmoothOptions(_Model):
    """Whittaker smoothing options."""

    lam: float = Field(1.0, gt=0, description="Smoothing strength (tuned on the synthetic truth).")
    method: Literal["fixed", "gcv", "vcurve"] = Field(
        "fixed", description="fixed lambda, or per-pixel lambda by GCV or V-curve.")
    gap_weight: float | None = Field(
        None, ge=0, le=1, description="Weight of gap-filled values; default 1.0 after fusion or ridge "
                                      "(radar-backed), 0.3 after linear/Whittaker gap-fill (guesses).")
    envelope_iterations: int = Field(0, ge=0, le=5, description="Upper-envelope iterations.")


class PhenologyOptions(_Model):
    """Season detection options."""

    min_amplitude: float = Field(0.15, gt=0, lt=2, description="Zigzag threshold (NDVI).")
    sos_fraction: float = Field(0.2, gt=0, lt=1, description="SOS at this share of amplitude.")
    eos_fraction: float = Field(0.2, gt=0, lt=1, description="EOS at this share of amplitude.")
    min_length: float = Field(40.0, gt=0, description="Shortest plausible season, days.")
    max_length: float = Field(200.0, gt=0, description="Longest plausible season, days.")
    method: Literal["amplitude", "derivative"] = Field(
        "amplitude", description="SOS/EOS by amplitude fraction (TIMESAT-like) or by the steepest slope.")
    seasons_per_year: int = Field(3, ge=1, le=4, description="Season slots per year.")
    year_start_month: int = Field(11, ge=1, le=12, description="First month of the agricultural year.")
    paddy_only: bool = Field(True, description="Only compute inside the paddy mask.")


class RunConfig(_Model):
    """Everything a pipeline run needs."""

    source: Source = Field(default_factory=SyntheticSource, discriminator="kind")
    out: str | Path = Field(Path("fusecube-out"), description=(
        "Output folder, or an fsspec URL (memory://, s3://, gs://, az://...; a file:// URL is a "
        "folder) the finished run is copied to, manifest last."))

    @field_validator("out", mode="after")
    @classmethod
    def _out_path_or_url(cls, value):
        """A path stays a Path (``file://`` URLs included); other fsspec URLs stay strings."""
        from fusecube.storage.remote import as_output

        return as_output(value)
    mask: str = Field("cube", description="'cube' (the cube's paddy_mask), 'auto' (paddy detected from "
                                           "the time series), 'none', or a path to a vector/raster mask.")
    gapfill: Literal["auto", "linear", "whittaker", "fusion", "ridge"] = Field(
        "auto", description="Gap-fill method. 'auto' scores the candidates on held-out data and "
                            "uses the best (a radar method only when it beats the best optical "
                            "baseline); a radar method asked for by name that validates worse "
                            "than the baseline is not used either. 'ridge' is the closed-form S1 "
                            "fusion fitted on each block (fusion.ridge), 'fusion' the neural model.")
    gapfill_candidates: tuple[Literal["linear", "whittaker", "ridge", "fusion"], ...] = Field(
        ("linear", "whittaker", "ridge"), description="Methods 'auto' chooses from (add 'fusion' "
                                                      "to train and score the neural model too).")
    gapfill_enforce: bool = Field(
        True, description="Refuse a radar method asked for by name that validates worse than "
                          "the optical baseline (the baseline is used). False uses it anyway; "
                          "the scores and a warning are still recorded.")
    gapfill_linear_below: int = Field(
        0, ge=0, le=12, description="With gapfill 'whittaker': gaps of at most this many dates "
                                    "are filled linearly. Under 'auto' the validation sets it "
                                    "(0-3) from held-out data.")
    provenance: bool = Field(
        True, description="Write where each NDVI value comes from (ndvi_source), its calibrated "
                          "uncertainty (ndvi_sigma), the ± days of season dates (<date>_pm_days) "
                          "and why a season slot is empty (season_reason).")
    fusion_model: Path | None = Field(None, description="Trained fusion model for gapfill=fusion.")
    smooth: SmoothOptions = Field(default_factory=SmoothOptions)
    phenology: PhenologyOptions = Field(default_factory=PhenologyOptions)
    block_size: int = Field(256, ge=16, description="Block edge in pixels.")
    strict: bool = Field(False, description="Stop at the first failing quality gate.")
    report: bool = Field(True, description="Write products and the HTML report.")
    result_gates: bool = Field(
        True, description="Fail a run whose results are empty or implausible (paddy without "
                          "seasons, all-NaN layers, values outside physical ranges) and keep the "
                          "previous output; False records the failures as warnings and publishes "
                          "the results anyway (CLI: --allow-empty-results).")
    memory_limit: str | None = Field(None, description="Memory budget of the run, e.g. '2GB'; "
                                     "the block edge is derived from it (default: half the "
                                     "available RAM).")
    ledger: str | None = Field(None, description="Run ledger: a SQLite path or SQLAlchemy URL "
                               "(default: $FUSECUBE_LEDGER or ~/.local/state/fusecube/ledger.sqlite).")
    scheduler: str | None = Field(None, description="Dask scheduler for the blocks: 'local:N' "
                                  "(a local cluster of N workers) or 'tcp://host:port'; "
                                  "None runs them in this process.")


def load_config(path: str | Path | None = None, **overrides) -> RunConfig:
    """Load a run configuration from YAML/TOML/JSON, then apply flag overrides.

    Args:
        path: Config file, or None for the defaults.
        **overrides: Top-level fields to replace (None values are ignored).

    Returns:
        The validated configuration.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise InputFileError(f"Config file {path} does not exist.")
        text = path.read_text()
        try:
            if path.suffix in (".toml",):
                data = tomllib.loads(text)
            elif path.suffix == ".json":
                data = json.loads(text)
            else:
                data = yaml.safe_load(text) or {}
        except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            detail = " ".join(str(exc).split())  # one line: parsers point with multi-line art
            raise ConfigError(f"Config file {path} cannot be parsed: {detail}") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}{_suggestion(e)}"
                             for e in exc.errors())
        raise ConfigError(f"Invalid run configuration{where}: {problems}") from exc


def _suggestion(error: dict) -> str:
    """``" (did you mean 'gapfill'?)"`` for an unknown key close to a known one."""
    import difflib

    if error.get("type") != "extra_forbidden" or not error.get("loc"):
        return ""
    known = {name for model in (RunConfig, SmoothOptions, PhenologyOptions, SyntheticSource,
                                CubeSource, GeoTiffSource, StacSource)
             for name in model.model_fields}
    match = difflib.get_close_matches(str(error["loc"][-1]), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
