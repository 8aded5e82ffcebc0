"""Where each value of a series sits relative to its observations: gap distances and gap runs.

Pure numpy over ``(N, T)`` arrays; every operation is a cumulative max/min along time, so the
cost is a few passes over the block whatever the number of pixels.
"""

from __future__ import annotations

import numpy as np


def neighbour_observations(observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last observation at or before, and the next at or after, each step.

    Args:
        observed: ``(N, T)`` bool, True where a value was observed.

    Returns:
        ``(previous, following)``: ``(N, T)`` int arrays; -1 where there is no previous
        observation and ``T`` where there is no following one.
    """
    n_t = observed.shape[-1]
    steps = np.arange(n_t)
    previous = np.maximum.accumulate(np.where(observed, steps, -1), axis=-1)
    following = np.minimum.accumulate(np.where(observed, steps, n_t)[..., ::-1], axis=-1)[..., ::-1]
    return previous, following


def days_to_observation(observed: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Days from each step to the nearest observation of its pixel (0 where observed).

    Args:
        observed: ``(N, T)`` bool, True where a value was observed.
        days: ``(T,)`` sample times in days.

    Returns:
        ``(N, T)`` float32; ``inf`` for pixels without any observation.
    """
    days = np.asarray(days, np.float64)
    n_t = days.size
    previous, following = neighbour_observations(observed)
    padded = np.concatenate([[-np.inf], days, [np.inf]])
    before = days - padded[previous + 1]
    after = padded[following + 1] - days
    return np.minimum(before, after).astype(np.float32) if n_t else np.zeros(observed.shape,
                                                                              np.float32)
