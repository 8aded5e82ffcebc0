"""Training windows cut on the device from a cube held in device memory (no loader at all).

When a preprocessed cube fits in GPU memory (the Demak scene: 893 x 671 px, 62 dates, 2 radar
bands + NDVI is about 0.6 GB in float32), the fastest input pipeline is none: the cube is moved
to the device once and every batch is gathered there with one indexing operation from random
window origins. :class:`DeviceWindows` yields the same batch dict as
:class:`~fusecube.ml.datasets.CubeDataset` (``image``, ``mask``, ``target``, ``target_mask``,
``time``, ``row``, ``col``), so :class:`~fusecube.ml.training.task.CubeFusionTask` trains on it
unchanged. It runs on any torch device (tested on the CPU).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fusecube.errors import PatchError, require

torch = require("torch", "ml")

#: Share of the free device memory a cube may take (the rest: network, activations).
DEVICE_SHARE = 0.5


def fits_on_device(nbytes: int, device: str, *, share: float = DEVICE_SHARE) -> bool:
    """Whether ``nbytes`` fit in ``share`` of the free memory of ``device`` (CPU: always)."""
    if not str(device).startswith("cuda"):
        return True
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return nbytes <= share * free


class DeviceWindows:
    """Random ``(band, time, y, x)`` windows gathered on ``device`` from a resident cube.

    Args:
        image: ``(C, T, Y, X)`` preprocessed inputs (e.g. normalised dB VV, VH), NaN missing.
        target: ``(K, T, Y, X)`` targets (observed NDVI), NaN missing.
        size: Window side in pixels.
        time_window: Time steps per window.
        batch_size: Windows per batch.
        seed: Seed of the window draws.
        device: torch device the cube is moved to.
        allowed: ``(Y, X)`` bool, pixels a window may cover (e.g. the training blocks of a
            spatial split); None: all.

    Raises:
        PatchError: The cube is smaller than a window, or no window fits ``allowed``.
    """

    def __init__(self, image: np.ndarray, target: np.ndarray, *, size: int, time_window: int,
                 batch_size: int, seed: int = 0, device: str = "cpu",
                 allowed: np.ndarray | None = None) -> None:
        _, n_t, ny, nx = image.shape
        if n_t < time_window or ny < size or nx < size:
            raise PatchError(f"A cube of {n_t} dates x {ny} x {nx} px is smaller than the window "
                             f"({time_window} dates x {size} px); use smaller windows.")
        self.size, self.time_window, self.batch_size = size, time_window, batch_size
        self.device = device

        def put(values: np.ndarray):
            values = torch.as_tensor(np.ascontiguousarray(values, dtype=np.float32), device=device)
            valid = torch.isfinite(values)
            return torch.nan_to_num(values, nan=0.0), valid

        self.image, self.mask = put(image)
        self.target, self.target_mask = put(target)
        self.origins = torch.as_tensor(window_origins((ny, nx), size, allowed), device=device)
        if self.origins.numel() == 0:
            raise PatchError("No window lies wholly inside the allowed pixels; use a smaller "
                             "window or a larger training region.")
        self.n_times = n_t
        self.generator = torch.Generator(device=device).manual_seed(int(seed))

    @property
    def nbytes(self) -> int:
        """Device memory the resident cube takes."""
        return sum(t.numel() * t.element_size()
                   for t in (self.image, self.mask, self.target, self.target_mask))

    def batch(self) -> dict:
        """One batch of random windows (the keys of a CubeDataset batch)."""
        b, dev, g = self.batch_size, self.device, self.generator
        pick = torch.randint(0, self.origins.shape[0], (b,), device=dev, generator=g)
        rows, cols = self.origins[pick, 0], self.origins[pick, 1]
        times = torch.randint(0, self.n_times - self.time_window + 1, (b,), device=dev, generator=g)
        t = (times[:, None] + torch.arange(self.time_window, device=dev))[:, :, None, None]
        r = (rows[:, None] + torch.arange(self.size, device=dev))[:, None, :, None]
        c = (cols[:, None] + torch.arange(self.size, device=dev))[:, None, None, :]

        def cut(cube):  # (C, T, Y, X) → (B, C, tw, size, size), one gather
            return cube[:, t, r, c].transpose(0, 1)

        return {"image": cut(self.image), "mask": cut(self.mask), "target": cut(self.target),
                "target_mask": cut(self.target_mask), "time": times, "row": rows, "col": cols}

    def __iter__(self) -> Iterator[dict]:
        """Batches without end (a training loop stops after its steps)."""
        while True:
            yield self.batch()


def window_origins(shape: tuple[int, int], size: int, allowed: np.ndarray | None) -> np.ndarray:
    """``(M, 2)`` int64 top-left corners of the ``size`` windows lying wholly in ``allowed``.

    Vectorised with a summed-area table (no loop over pixels).
    """
    ny, nx = shape
    if allowed is None:
        rows, cols = np.meshgrid(np.arange(ny - size + 1), np.arange(nx - size + 1), indexing="ij")
        return np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.int64)
    table = np.zeros((ny + 1, nx + 1), np.int64)
    table[1:, 1:] = np.asarray(allowed, bool).cumsum(0).cumsum(1)
    inside = (table[size:, size:] - table[:-size, size:] - table[size:, :-size]
              + table[:-size, :-size]) == size * size
    return np.argwhere(inside).astype(np.int64)
