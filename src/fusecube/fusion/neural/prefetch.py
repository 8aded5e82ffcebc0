"""One-item-ahead prefetch: the next item is produced on a thread while the caller uses this one.

Used to overlap host work (building a batch's features, reading a block) with device work
(the network's forward pass), so the GPU does not wait for the host between steps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` in order while a thread produces up to ``depth`` of them in advance.

    An exception raised by the producer is re-raised in the caller at the item it stopped at.
    ``depth=0`` yields the items without a thread.

    Args:
        items: Any iterable (its items are produced on the prefetch thread).
        depth: Items produced ahead of the one in use.

    Yields:
        The items of ``items``, in order.
    """
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put((_DONE, exc))

    worker = threading.Thread(target=produce, name="fusecube-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = slots.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
