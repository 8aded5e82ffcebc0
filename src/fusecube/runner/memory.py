"""Memory budget: parse limits, derive the block edge from them, watch RSS under pressure.

The block edge depends only on the memory limit, the number of periods and the configured
maximum edge, never on the current RSS, so two runs with the same configuration cut the
same blocks (and write byte-identical stores).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import re
import resource
from dataclasses import dataclass

import psutil

from fusecube.errors import ConfigError

log = logging.getLogger(__name__)

MB = 1024**2
#: Peak bytes per pixel and period of a block: the stages allocate 112 B (tracemalloc on the
#: synthetic scene); the RSS a block adds was measured at ~54 B (benchmarks/bench_runner.py,
#: 256 px blocks), since not every allocated page is touched. 120 B is the safe side of both.
BYTES_PER_PIXEL_PERIOD = 120
#: Resident memory of the interpreter, numpy/xarray/zarr/dask and the run's global state
#: (mask, screen) before any block is read (measured 190-220 MB), plus numba and LLVM with
#: the compiled Whittaker and season kernels loaded (+~175 MB measured, of which ~100 MB is
#: importing numba), and the gap-fill validation and result gates (the ridge kernels
#: compiled, four validation windows filled, the result read once: the run peaks at ~450 MB
#: on a 256 x 256 x 62 scene whatever its block edge, ~505-525 MB on a first run that compiles
#: every numba kernel instead of loading it from the cache, and 580 MB for that same first run
#: on the CI machine, whose libraries map more); torch for the fusion model adds more.
BASE_OVERHEAD = 600 * MB
FUSION_OVERHEAD = 700 * MB
#: Block edges are multiples of this, so chunks stay aligned when blocks are split.
EDGE_STEP = 16
#: RSS above this share of the limit counts as pressure.
PRESSURE_SHARE = 0.85

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
          "tb": 1000**4, "tib": 1024**4}


def parse_memory(value: str | int | float) -> int:
    """Parse a memory size such as ``"2GB"``, ``"512MiB"`` or ``1500000000`` into bytes.

    Args:
        value: Bytes as a number, or a number with a unit (B, KB, MB, GB, TB; KiB... MiB...).

    Returns:
        The size in bytes.
    """
    if isinstance(value, int | float):
        size = int(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ConfigError(
                f"Memory limit {value!r} is not a size; write it like '2GB', '512MB' or '1.5GiB'.")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"Memory limit {value!r} must be positive, e.g. '2GB'.")
    return size


def default_memory_limit() -> int:
    """Half the memory available now, the default budget of a run."""
    return int(psutil.virtual_memory().available * 0.5)


def format_mb(size: float) -> str:
    """Bytes as a short MB/GB string."""
    return f"{size / 1024**3:.1f} GB" if size >= 1024**3 else f"{size / MB:.0f} MB"


def block_edge_for(memory_limit: int, n_periods: int, max_edge: int, *, fusion: bool = False) -> int:
    """The largest block edge whose processing fits the memory limit.

    Args:
        memory_limit: The run's memory limit in bytes.
        n_periods: Time steps of the cube (every block holds all of them).
        max_edge: Largest edge allowed (the configured ``block_size``).
        fusion: Whether the fusion model (torch) is loaded too.

    Returns:
        The block edge in pixels, a multiple of 16 (or ``max_edge`` when that is smaller).
    """
    base = BASE_OVERHEAD + (FUSION_OVERHEAD if fusion else 0)
    budget = memory_limit - base
    smallest = EDGE_STEP * EDGE_STEP * n_periods * BYTES_PER_PIXEL_PERIOD
    if budget < smallest:
        need = base + smallest
        raise ConfigError(
            f"Memory limit {format_mb(memory_limit)} is too small for a {n_periods}-period cube: "
            f"the run needs about {format_mb(need)} for the smallest ({EDGE_STEP} px) blocks. "
            f"Raise --memory-limit to at least {math.ceil(need / MB)}MB.")
    edge = int(math.sqrt(budget / (n_periods * BYTES_PER_PIXEL_PERIOD)))
    edge = max(EDGE_STEP, edge // EDGE_STEP * EDGE_STEP)
    return min(edge, max_edge)


def rss_bytes() -> int:
    """Resident memory of this process now."""
    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far.

    Linux's ``VmHWM`` is used where available: ``ru_maxrss`` survives ``exec`` and so reports
    the parent's peak for a process started from a big one (a test runner, a notebook).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Called after every block (:func:`fusecube.runner.tasks.run_block`, in the runner and on
    Dask workers): buffers under the mmap threshold come from the heap, and without a trim the
    pages they leave behind stay resident, so a worker's RSS crept up with the number of
    blocks it had run rather than with what one block needs.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: garbage collection is all we can do
        pass


#: glibc ``mallopt`` parameter number of ``M_MMAP_THRESHOLD``.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024


def keep_heap_flat() -> bool:
    """Fix glibc's mmap threshold at 32 MiB so large buffers go back to the OS when freed.

    glibc otherwise raises its mmap threshold after the first large frees and the retained
    heap grew with the AOI (+54 MB from the Demak scene to one 4x larger, measured). A 1 MiB
    threshold kept it flattest but turned every small torch/numpy temporary into an mmap and
    a page-fault storm (fusion training 21 s → 69 s, sys time above user time, measured), so
    the threshold sits at glibc's own upper default. Returns False where this is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


@dataclass
class MemoryGuard:
    """Watches RSS against the limit; under pressure frees memory and splits later blocks.

    Splitting only changes how a block is processed (in ``split x split`` sub-blocks written
    one after the other into the same chunks), never the blocks or chunks themselves, so the
    output bytes do not depend on it.
    """

    limit: int
    split: int = 1
    pressure_events: int = 0

    def check(self, edge: int) -> str | None:
        """Check RSS after a block; returns a message when it acted on pressure."""
        rss = rss_bytes()
        if rss <= PRESSURE_SHARE * self.limit:
            return None
        release_memory()
        after = rss_bytes()
        self.pressure_events += 1
        message = (f"memory pressure: RSS {format_mb(rss)} of limit {format_mb(self.limit)}; "
                   f"freed to {format_mb(after)}")
        if after > PRESSURE_SHARE * self.limit and edge // (self.split * 2) >= EDGE_STEP // 2:
            self.split *= 2
            message += f"; processing blocks in {self.split}x{self.split} parts from now on"
        log.warning(message)
        return message
