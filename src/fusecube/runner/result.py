"""What a run produced and measured (:class:`RunResult`), as ``run.json`` records it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunResult:
    """What a run produced and measured."""

    out: Path
    result: Path
    cube: Path
    truth: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    screen: dict = field(default_factory=dict)
    n_blocks: int = 0
    products: dict[str, str] = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    run_id: str = ""
    block_edge: int = 0
    memory_limit_mb: float = 0.0
    blocks_resumed: int = 0
    worker_peak_rss_mb: float = 0.0
    memory_pressure_events: int = 0
    scheduler: str = ""
    gapfill: dict = field(default_factory=dict)
    """The validated gap-fill choice (:class:`~fusecube.evaluate.choice.GapfillChoice`)."""
    result_gates: list[dict] = field(default_factory=list)
    """The result gates (:mod:`fusecube.quality.result_gates`) the results passed."""

    def to_json(self) -> dict:
        """JSON-able summary."""
        return {"run_id": self.run_id, "out": str(self.out), "result": str(self.result),
                "cube": str(self.cube), "truth": str(self.truth) if self.truth else None,
                "seconds": self.seconds, "peak_rss_mb": self.peak_rss_mb,
                "worker_peak_rss_mb": self.worker_peak_rss_mb,
                "memory_limit_mb": self.memory_limit_mb, "block_edge": self.block_edge,
                "memory_pressure_events": self.memory_pressure_events,
                "screen": self.screen, "n_blocks": self.n_blocks,
                "blocks_resumed": self.blocks_resumed, "scheduler": self.scheduler,
                "products": self.products, "accuracy": self.accuracy, "gapfill": self.gapfill,
                "result_gates": self.result_gates}

    def rebased(self, old: Path, new: Path) -> RunResult:
        """The same result with every path under ``old`` moved under ``new`` (after the swap)."""
        old, new = Path(old), Path(new)

        def moved(path):
            path = Path(path)
            return new / path.relative_to(old) if path.is_relative_to(old) else path

        return dataclasses.replace(
            self, out=moved(self.out), result=moved(self.result), cube=moved(self.cube),
            truth=moved(self.truth) if self.truth else None,
            products={k: str(moved(v)) for k, v in self.products.items()})
