"""Retries with exponential backoff and jitter, and the per-item failure record."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from fusecube.errors import FusecubeError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Messages that mean retrying cannot help (missing or forbidden object).
PERMANENT_MARKERS = ("HTTP response code: 404", "HTTP response code: 403", "404 Not Found",
                     "not recognized as a supported file format", "No such file",
                     "must have the following fields (from the projection extension)")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a read."""

    attempts: int = 5
    """Total tries, the first included."""
    backoff_s: float = 0.5
    """Delay before the second try; doubles each time."""
    max_backoff_s: float = 30.0
    """Longest delay between tries."""
    jitter: float = 0.5
    """Each delay is multiplied by a random factor in ``1 ± jitter``."""
    max_elapsed_s: float = 600.0
    """No new try starts once this many seconds have passed since the first (a try under way
    is never cut short: each request has its own timeout)."""

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (1 + self.jitter * (2 * rng.random() - 1))


@dataclass(frozen=True)
class ItemFailure:
    """One item/asset that could not be read after all retries."""

    item_id: str
    """STAC item id or file name."""
    asset: str
    """Asset (band) name."""
    error: str
    """Last error message."""
    attempts: int
    """Tries made."""
    collection: str = ""
    """Collection id."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


class RetriesExhausted(Exception):
    """Raised by :func:`with_retries` with the number of tries made and the last error."""

    def __init__(self, attempts: int, last: BaseException, limit_s: float | None = None,
                 ) -> None:
        self.attempts = attempts
        self.last = last
        self.limit_s = limit_s
        """The time limit that stopped the retries (None: the count did, or a permanent error)."""
        limit = "" if limit_s is None else f"; stopped by the retry time limit of {limit_s:g} s"
        super().__init__(f"{type(last).__name__}: {last} (after {attempts} tries{limit})")


def is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help (404, 403, not a raster)."""
    text = str(exc)
    return any(marker in text for marker in PERMANENT_MARKERS)


def with_retries(fn: Callable[[], T], what: str, policy: RetryPolicy, *,
                 rng: random.Random | None = None,
                 retry_on: tuple[type[BaseException], ...] = (Exception,),
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> tuple[T, int]:
    """Call ``fn`` until it succeeds, sleeping with exponential backoff and jitter between tries.

    Args:
        fn: The read to try.
        what: Description for the log.
        policy: Tries and delays.
        rng: Random source for the jitter.
        retry_on: Exception types worth a retry; others propagate at once.
        sleep: Sleep function (tests may record the delays instead).
        clock: Seconds from a fixed start, for ``policy.max_elapsed_s`` (tests may fake it).

    Returns:
        ``fn()``'s result and the number of tries it took.

    Raises:
        RetriesExhausted: every try failed, the failure was permanent, or the next try would
            start after ``policy.max_elapsed_s``.
        FusecubeError: raised by ``fn``: a decision (a limit, a refusal), never retried.
    """
    rng = rng or random.Random()
    started = clock()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn(), attempt
        except FusecubeError:
            raise
        except retry_on as exc:
            if attempt == policy.attempts or is_permanent(exc):
                raise RetriesExhausted(attempt, exc) from exc
            delay = policy.delay(attempt, rng)
            if clock() - started + delay > policy.max_elapsed_s:
                raise RetriesExhausted(attempt, exc, policy.max_elapsed_s) from exc
            log.info("%s failed (try %d/%d: %s); retrying in %.2f s", what, attempt,
                     policy.attempts, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover

