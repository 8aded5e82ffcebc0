"""Faults the synthetic scene plants on purpose, so reports can label them as planted.

The scene writer (:mod:`fusecube.sources.synthetic.tiles`) sets one NDVI period of every pixel
to exactly 0 (``Layout.zero_period``: a broken composite) and records it as the ``zero_period``
attribute of ``truth.zarr``. The input gate ``ndvi_zero_periods`` is meant to catch it; a
report that shows that gate failing says the fault was planted, not found in real data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: What each planted fault is, by the gate that catches it.
PLANTED_NOTES = {
    "ndvi_zero_periods": "planted by the synthetic demo: period {periods} is a deliberately "
                         "broken (all-zero) composite, screened out as missing; with real "
                         "data this gate would point at a broken input.",
}


def planted_faults(truth_attrs: Mapping) -> list[dict]:
    """The faults a synthetic scene planted, from its truth store's attributes.

    Args:
        truth_attrs: The global attributes of ``truth.zarr`` (``zero_period``).

    Returns:
        ``[{"gate", "periods", "note"}]``: the gate meant to catch each fault, the periods it
        affects and a sentence for reports; ``[]`` for anything that is not a synthetic scene.
    """
    if "zero_period" not in truth_attrs:
        return []
    periods = [int(truth_attrs["zero_period"])]
    return [{"gate": "ndvi_zero_periods", "periods": periods,
             "note": PLANTED_NOTES["ndvi_zero_periods"].format(periods=periods[0])}]


def planted_in_store(truth: str | Path | None) -> list[dict]:
    """:func:`planted_faults` of a ``truth.zarr`` store (only its attributes are read).

    Returns:
        ``[]`` without a truth store (real data) or when it cannot be read.
    """
    if not truth or not Path(truth).exists():
        return []
    import zarr

    try:
        attrs = dict(zarr.open_group(str(truth), mode="r").attrs)
    except Exception:  # an unreadable truth store labels nothing as planted
        return []
    return planted_faults(attrs)
