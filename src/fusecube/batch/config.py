"""Batch settings: one frozen pydantic model, defaults merged with per-AOI overrides."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fusecube.batch.aois import AOI, OVERRIDE_FIELDS
from fusecube.config import StacSource
from fusecube.errors import ConfigError

Product = Literal["cube", "patches", "products"]
SourceKind = Literal["synthetic", "stac"]
#: Fields that change how a batch runs, not what it computes (may differ on --resume).
RUNTIME_FIELDS = frozenset({"concurrency", "time_budget_s", "ledger", "item_workers", "retries",
                            "timeout_s", "retry_backoff_s", "gdal_retries", "sign"})


class BatchConfig(BaseModel):
    """Everything a batch needs; each AOI may override :data:`~fusecube.batch.aois.OVERRIDE_FIELDS`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(description="First day (ISO date) of the first period.")
    end: str = Field(description="Last day (ISO date) to cover.")
    out: Path = Field(description="Batch folder: ledger, one folder per AOI, the summary report.")
    source: SourceKind = Field("synthetic", description="synthetic (offline, seeded by AOI id) "
                               "or stac (a STAC API, AOI windows only).")
    produce: tuple[Product, ...] = Field(("cube", "patches"), description="What to make per "
                                         "AOI: cube, patches (.npy tiles), products (full pipeline).")
    resolution: float = Field(10.0, gt=0, description="Pixel size in metres (UTM grid per AOI).")
    period_days: int = Field(12, ge=1, description="Compositing period in days.")
    concurrency: int = Field(2, ge=1, le=64, description="AOIs processed at the same time.")
    time_budget_s: float | None = Field(None, gt=0, description="Seconds one AOI may take before "
                                        "it is stopped and recorded as failed (checked between "
                                        "items, tiles and stages).")
    patch_size: int = Field(64, ge=4, description="Tile edge in pixels.")
    patch_vars: tuple[str, ...] = Field(("vv", "vh"), description="Cube variables in the tiles.")
    max_invalid_fraction: float = Field(0.05, ge=0, le=1, description="Skip a tile with more "
                                        "invalid values than this share.")
    mask: str | None = Field(None, description="Paddy mask for products (default: the cube's "
                             "for synthetic, 'none' for stac).")
    stac_url: str | None = Field(None, description="STAC API root (default: the catalogue's).")
    catalogue: str = Field("planetary-computer", description="Known catalogue for collections "
                           "and asset names.")
    sign: str | None = Field(None, description="URL signing of asset hrefs: 'planetary-computer' "
                             "or 'module:function'.")
    max_cloud: float = Field(80.0, ge=0, le=100, description="Skip S2 items above this cloud %.")
    retries: int = Field(5, ge=1, description="Tries per search and per asset read.")
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one request.")
    retry_backoff_s: float = Field(0.5, ge=0, description="Delay before the second try; doubles.")
    gdal_retries: int = Field(3, ge=0, description="Retries GDAL makes per HTTP range request.")
    item_workers: int = Field(2, ge=1, description="Items of one AOI read in parallel.")
    ledger: str | None = Field(None, description="Ledger (SQLite path or SQLAlchemy URL); "
                               "default <out>/ledger.sqlite.")

    @field_validator("produce")
    @classmethod
    def _produce_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("nothing to produce; give --produce cube, patches and/or products")
        return tuple(dict.fromkeys(value))

    def stac(self, aoi: str | None = None) -> StacSource:
        """This batch's STAC settings as the one STAC configuration every command shares."""
        return StacSource(aoi=aoi, start=self.start, end=self.end, catalogue=self.catalogue,
                          stac_url=self.stac_url, resolution=self.resolution,
                          period_days=self.period_days, max_cloud=self.max_cloud,
                          retries=self.retries, retry_backoff_s=self.retry_backoff_s,
                          max_backoff_s=max(self.retry_backoff_s * 8, 1.0),
                          timeout_s=self.timeout_s, gdal_retries=self.gdal_retries,
                          workers=self.item_workers, sign=self.sign)

    @property
    def ledger_location(self) -> str:
        """The ledger this batch uses."""
        return self.ledger or str(Path(self.out) / "ledger.sqlite")

    def fingerprint(self) -> str:
        """Hash of what the batch computes (runtime fields excluded)."""
        data = self.model_dump(mode="json", exclude=set(RUNTIME_FIELDS) | {"out"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def for_aoi(self, aoi: AOI) -> BatchConfig:
        """These settings with the AOI's overrides applied (validated).

        Raises:
            ConfigError: An override is not a valid value, naming the AOI and the column.
        """
        if not aoi.overrides:
            return self
        data = self.model_dump()
        data.update({k: v for k, v in aoi.overrides.items() if k in OVERRIDE_FIELDS})
        try:
            return BatchConfig.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"AOI {aoi.id!r}: invalid override ({problems}); fix that column "
                              "of its row in the AOI file.") from exc


def differing_fields(old: BatchConfig, new: BatchConfig) -> list[str]:
    """Names of the compute-relevant fields that differ between two configs."""
    a = old.model_dump(mode="json", exclude=set(RUNTIME_FIELDS) | {"out"})
    b = new.model_dump(mode="json", exclude=set(RUNTIME_FIELDS) | {"out"})
    return sorted(k for k in a if a[k] != b.get(k))
