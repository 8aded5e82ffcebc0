"""Many AOIs into cubes, tiles and products with one resumable command (``fusecube batch``)."""

from fusecube.batch.aois import AOI, aoi_geobox, read_aois
from fusecube.batch.config import BatchConfig
from fusecube.batch.ledger import STATES, AOIRecord, BatchLedger
from fusecube.batch.run import BatchResult, batch_status, plan, run_batch

__all__ = ["AOI", "STATES", "AOIRecord", "BatchConfig", "BatchLedger", "BatchResult", "aoi_geobox",
           "batch_status", "plan", "read_aois", "run_batch"]
