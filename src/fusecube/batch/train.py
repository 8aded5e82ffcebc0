"""A training stage on a batch's tiles: proves the tiles are usable for learning.

A tiny convolutional net learns VH (dB) from VV (dB) on the tiles of the done AOIs; whole
AOIs are held out for validation (different places, never seen in training), and the
validation error is reported beside the error of predicting the training mean, the
baseline any useful model must beat.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fusecube.errors import PatchError, require
from fusecube.units import to_db

log = logging.getLogger(__name__)


def _tiles_db(path: Path, want: tuple[str, str]) -> np.ndarray:
    from fusecube.ml.patches.patch_set import PatchSet

    patch_set = PatchSet.open(path)
    names = list(patch_set.variables)
    missing = [v for v in want if v not in names]
    if missing:
        raise PatchError(f"Tiles in {path} lack {missing} (they hold {names}); rerun the batch with "
                         "--vars vv,vh to train on them.")
    idx = [names.index(v) for v in want]
    parts = [np.load(p, mmap_mode="r")[:, idx] for p in patch_set.shard_paths]
    tiles = np.concatenate(parts).astype(np.float32)
    units = patch_set.meta.get("preprocessing", {}).get("units", {})
    if units.get(want[0], "linear") != "dB":
        tiles = to_db(tiles)
    return tiles


def train_on_batch(out: str | os.PathLike, *, epochs: int = 1, batch_size: int = 16,
                   val_fraction: float = 0.25, seed: int = 0, max_steps: int | None = None) -> dict:
    """Fit a tiny VV → VH model on the tiles of the done AOIs of the batch in ``out``.

    Args:
        out: Batch folder.
        epochs: Passes over the training tiles.
        batch_size: Tiles per step.
        val_fraction: Share of AOIs held out (at least one).
        seed: Seed of the AOI split, the shuffle and the weights.
        max_steps: Stop after this many steps (None: all epochs).

    Returns:
        AOIs and tiles used, losses (first/last training batch, validation), baseline.

    Raises:
        PatchError: Fewer than two done AOIs with tiles, or tiles without vv/vh.
    """
    torch = require("torch", "ml")
    from fusecube.batch.run import batch_status

    status = batch_status(out)
    with_tiles = [r for r in status["records"]
                  if r.state == "done" and r.tiles > 0 and "patches" in r.detail_dict.get("outputs", {})]
    if len(with_tiles) < 2:
        raise PatchError(f"Batch in {out} has {len(with_tiles)} done AOI(s) with tiles; training "
                         "needs at least 2 (one held out). Run the batch with --produce patches.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(with_tiles))
    n_val = max(1, int(round(val_fraction * len(with_tiles))))
    val_ids = {with_tiles[i].aoi_id for i in order[:n_val]}
    sets = {"train": [], "val": []}
    for r in with_tiles:
        tiles = _tiles_db(Path(r.detail_dict["outputs"]["patches"]), ("vv", "vh"))
        sets["val" if r.aoi_id in val_ids else "train"].append(tiles)
    train = np.concatenate(sets["train"])
    val = np.concatenate(sets["val"])
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    train_t = torch.from_numpy((train - mean) / std)
    val_t = torch.from_numpy((val - mean) / std)

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 1, 3, padding=1))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.MSELoss()
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    steps = 0
    for _ in range(epochs):
        for batch in torch.randperm(len(train_t), generator=generator).split(batch_size):
            x, y = train_t[batch, :1], train_t[batch, 1:]
            loss = loss_fn(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        if max_steps is not None and steps >= max_steps:
            break
    with torch.no_grad():
        val_loss = float(loss_fn(model(val_t[:, :1]), val_t[:, 1:]))
        baseline = float(loss_fn(torch.zeros_like(val_t[:, 1:]), val_t[:, 1:]))  # training mean
    report = {"aois_train": len(with_tiles) - n_val, "aois_val": n_val, "tiles_train": len(train_t),
              "tiles_val": len(val_t), "steps": steps, "first_loss": losses[0], "last_loss": losses[-1],
              "val_loss": val_loss, "val_baseline_loss": baseline, "val_aois": sorted(val_ids)}
    log.info("batch training: %s", report)
    return report
