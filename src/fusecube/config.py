"""Run configuration: pydantic models, loadable from YAML/TOML/JSON and overridable by flags."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class CubeSource(_Model):
    """Read an existing zarr cube."""

    kind: Literal["cube"] = "cube"
    path: Path = Field(description="Path to a zarr cube written by fusecube.")


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

    source: SyntheticSource | CubeSource = Field(default_factory=SyntheticSource,
                                                 discriminator="kind")
    out: Path = Field(Path("fusecube-out"), description="Output folder.")
    mask: str = Field("cube", description="'cube' (the cube's paddy_mask), 'auto' (paddy detected from "
                                           "the time series), 'none', or a path to a vector/raster mask.")
    gapfill: Literal["linear", "whittaker", "fusion", "ridge"] = Field(
        "linear", description="Gap-fill method; 'ridge' is the closed-form S1 fusion fitted on each "
                              "block (fusion.ridge).")
    fusion_model: Path | None = Field(None, description="Trained fusion model for gapfill=fusion.")
    smooth: SmoothOptions = Field(default_factory=SmoothOptions)
    phenology: PhenologyOptions = Field(default_factory=PhenologyOptions)
    block_size: int = Field(256, ge=16, description="Block edge in pixels.")
    strict: bool = Field(False, description="Stop at the first failing quality gate.")
    report: bool = Field(True, description="Write products and the HTML report.")
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
                                CubeSource) for name in model.model_fields}
    match = difflib.get_close_matches(str(error["loc"][-1]), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
