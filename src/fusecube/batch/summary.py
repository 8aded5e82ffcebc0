"""What a terminal shows about a batch: one line per finished AOI, the totals, the AOI table."""

from __future__ import annotations

from fusecube.batch.ledger import AOIRecord
from fusecube.batch.report import human_bytes


def record_line(record: AOIRecord) -> str:
    """One AOI: id, state, seconds, tiles, bytes read and the reason of a failure or skip."""
    extra = f" {record.tiles} tiles" if record.tiles else ""
    if record.bytes_read:
        extra += f", {human_bytes(record.bytes_read)} read"
    reason = f" — {record.reason}" if record.reason else ""
    return f"{record.aoi_id:<20} {record.state:<10} {record.seconds:6.1f} s{extra}{reason}"


def totals_line(totals: dict) -> str:
    """AOIs per state, tiles, bytes read and seconds of AOI work (see ``ledger.totals``)."""
    states = ", ".join(f"{n} {s}" for s, n in totals["states"].items() if n)
    return (f"{totals['aois']} AOIs: {states}; {totals['tiles']} tiles, "
            f"{human_bytes(totals['bytes_read'])} read, {totals['seconds']:.1f} s of AOI work")


def records_table(records: list[AOIRecord]):
    """A :class:`rich.table.Table` of AOIs: state, attempts, tiles, bytes, seconds, reason."""
    from rich.table import Table

    table = Table()
    for name in ("AOI", "state", "attempts", "tiles", "bytes read", "seconds"):
        table.add_column(name, no_wrap=True)
    table.add_column("reason")
    for r in records:
        table.add_row(r.aoi_id, r.state, str(r.attempts), str(r.tiles), human_bytes(r.bytes_read),
                      f"{r.seconds:.1f}", r.reason)
    return table
