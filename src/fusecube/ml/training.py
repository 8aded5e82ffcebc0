"""Training the 3-D U-Net cube model with Lightning: task, data wiring, writer and the CLI.

* :class:`CubeFusionTask` (LightningModule) holds the training logic: it hides observed NDVI
  dates at random (like clouds), asks the :class:`~fusecube.ml.models.UNet3D` to give them
  back from the radar series and the dates left, and trains on the physics-style loss terms
  combined with learnable homoscedastic-uncertainty weights. Validation scores hidden
  observations in held-out spatial blocks (the DataModule's split) and on held-out dates
  (``holdout_dates``), which are never shown nor used as targets in training.
* :class:`CubeFusionDataModule` finds the cubes under ``zarr_root`` and reuses
  :class:`~fusecube.ml.datamodules.CubeDataModule` (streaming windows, spatial-block split,
  statistics fitted on training windows). Its state (statistics, split, content hash of the
  cubes) goes into every checkpoint, so ``predict`` uses the training statistics and a result
  names exactly the data that produced it.
* :class:`FusedCubeWriter` writes the predicted cube(s) (``ndvi_fused``: observed NDVI kept,
  gaps from the model), blending overlapping windows.
* :func:`cli_main` is the LightningCLI (``fusecube train fit|validate|predict``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_FUSED, TIME, VH, VV, X, Y, read_cube, write_cube
from fusecube.errors import CubeModelError, require
from fusecube.fusion.neural.features import screen_zero_periods
from fusecube.ml.datamodules import CubeDataModule
from fusecube.ml.datasets import CubeDataset
from fusecube.ml.models.losses import (
    TERMS,
    UncertaintyWeighting,
    masked_mse,
    range_loss,
    s1_change_loss,
    smoothness_loss,
)
from fusecube.ml.models.unet3d import UNet3D
from fusecube.ml.samplers import CubeWindows
from fusecube.ml.sar import SARPreprocessing
from fusecube.ml.transforms import Compose, FillMissing, Preprocess

torch = require("torch", "ml")
lightning = require("lightning", "ml")
from lightning.pytorch.callbacks import BasePredictionWriter  # noqa: E402

log = logging.getLogger(__name__)

#: Input channels of the network: S1 (vv, vh, vh - vv; normalised dB), masked NDVI, NDVI shown,
#: S1 valid, and the shown NDVI linearly interpolated in time (the prediction is a correction
#: of it, so an untrained network starts as linear gap-filling).
INPUT_CHANNELS: tuple[str, ...] = ("vv", "vh", "vh_minus_vv", "ndvi_masked", "ndvi_valid", "s1_valid",
                                   "ndvi_interp")
RECORD_NAME = "run-record.json"


def find_cubes(zarr_root: str | os.PathLike, pattern: str = "**/cube.zarr") -> list[Path]:
    """Cube stores under ``zarr_root`` (sorted), or ``zarr_root`` itself when it is one."""
    root = Path(zarr_root)
    if (root / "zarr.json").exists():
        return [root]
    if not root.is_dir():
        raise CubeModelError(f"--data.zarr_root {root} does not exist; give a folder holding cube "
                             "stores (e.g. made by `fusecube convert` or `fusecube synth`) or one store.")
    found = sorted(p for p in root.glob(pattern) if (p / "zarr.json").exists())
    if not found:
        raise CubeModelError(f"No cube matching {pattern!r} under {root}; convert inputs with "
                             "`fusecube convert IN --out ROOT/NAME/cube.zarr` or pass --data.pattern.")
    return found


def covering_windows(shapes: Sequence[tuple[int, int, int]], *, size: int, time_window: int,
                     stride: int, time_stride: int) -> CubeWindows:
    """Windows that cover every pixel and date of each cube (the last ones snapped to the edge)."""
    def starts(n: int, w: int, step: int) -> np.ndarray:
        if n < w:
            raise CubeModelError(f"A cube of {n} along one axis is smaller than the window {w}; use "
                                 "a smaller --data.size / --data.time_window.")
        return np.unique(np.append(np.arange(0, n - w + 1, step), n - w))

    parts = []
    for src, (n_t, h, w) in enumerate(shapes):
        t, r, c = (a.ravel() for a in np.meshgrid(starts(n_t, time_window, time_stride),
                                                  starts(h, size, stride), starts(w, size, stride),
                                                  indexing="ij"))
        parts.append((np.full(t.size, src), t, r, c))
    s, t, r, c = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4))
    return CubeWindows(s, t, r, c, size, time_window)


# ---------------------------------------------------------------------------- data


class CubeFusionDataModule(CubeDataModule):
    """Cubes under ``zarr_root`` → windows of S1 (vv, vh) and observed NDVI, split by blocks.

    Args:
        zarr_root: A folder of cube stores (searched with ``pattern``) or one store.
        pattern: Glob of the stores under ``zarr_root``.
        size: Window side in pixels.
        time_window: Time steps per window.
        stride: Pixel step between training windows (default ``size``).
        time_stride: Step between time windows (default ``time_window``).
        predict_overlap: Overlap in pixels of prediction windows (blended).
        batch_size: Windows per batch.
        num_workers: DataLoader workers.
        val_fraction: Share of spatial blocks held out for validation.
        block_size: Split block side in pixels (default 4 window sizes).
        buffer: Training windows within this many pixels of a validation window are dropped.
        seed: Seed of the split, shuffle and augmentation.
        augment: Random flips/rotations of training windows.
        stats_cache: JSON cache of the SAR statistics (``default``: the user cache; None: none).
        cache_mb: Decoded-chunk cache per loader process, MB.
        hash_data: Record a content hash of the cubes (reads every byte once per ``fit``).
    """

    def __init__(self, zarr_root: str, *, pattern: str = "**/cube.zarr", size: int = 32,
                 time_window: int = 16, stride: int | None = None, time_stride: int | None = None,
                 predict_overlap: int = 8, batch_size: int = 4, num_workers: int = 0,
                 val_fraction: float = 0.2, block_size: int | None = None, buffer: int = 0,
                 seed: int = 0, augment: bool = True, stats_cache: str | None = "default",
                 cache_mb: float = 256.0, hash_data: bool = True) -> None:
        self.zarr_root = Path(zarr_root)
        cubes = find_cubes(zarr_root, pattern)
        super().__init__(cubes, variables=(VV, VH), target_variables=(NDVI,), size=size,
                         time_window=time_window, stride=stride, time_stride=time_stride,
                         batch_size=batch_size, num_workers=num_workers, val_fraction=val_fraction,
                         block_size=block_size, buffer=buffer, seed=seed, db=True,
                         clip_method="percentile", norm="zscore", augment=augment,
                         stats_cache=stats_cache, cache_mb=cache_mb)
        self.predict_overlap = predict_overlap
        self.hash_data = hash_data
        self.data_manifest: dict | None = None
        self.restored: dict | None = None
        self.predict_dataset: CubeDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Fit: split, statistics and the data hash; predict: nothing until statistics are known."""
        if stage == "predict":
            return
        super().setup(stage)
        if self.hash_data and self.data_manifest is None:
            from fusecube.sources.convert import dataset_manifest

            self.data_manifest = dataset_manifest(self.cubes)
        if self.restored is not None:
            self._use_restored()

    def state_dict(self) -> dict:
        """Statistics, split and data hash: saved in every checkpoint."""
        if self.params is None:
            return {}
        return {"preprocessing": self.params.to_dict(), "split": self.split.to_dict(),
                "data_manifest": self.data_manifest, "cubes": [str(p) for p in self.cubes],
                "variables": list(self.variables)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the training statistics (a checkpoint's), used for every later batch."""
        if not state_dict:
            return
        self.restored = state_dict
        self._use_restored()

    def _use_restored(self) -> None:
        state = self.restored
        self.params = SARPreprocessing.from_dict(state["preprocessing"])
        base = Compose([Preprocess(self.params, channel_axis=-4), FillMissing()])
        for dataset in (self.val_dataset, self.predict_dataset):
            if dataset is not None:
                dataset.transform = base
        if self.train_dataset is not None:
            self.train_dataset.transform.transforms[0] = Preprocess(self.params, channel_axis=-4)
        old = (state.get("data_manifest") or {}).get("digest")
        new = (self.data_manifest or {}).get("digest")
        if old and new and old != new:
            log.warning("the cubes under %s (digest %s) differ from those the checkpoint was trained "
                        "on (digest %s); using the checkpoint's statistics", self.zarr_root, new[:12],
                        old[:12])

    def predict_dataloader(self):
        """Windows covering every pixel and date of every cube, with the training statistics."""
        if self.params is None:
            log.warning("no checkpoint statistics: fitting them on the training windows of %s",
                        self.zarr_root)
            super().setup("fit")
        shapes = []
        for cube in self.cubes:
            ds = read_cube(cube, chunks=None)
            shapes.append((ds.sizes[TIME], ds.sizes[Y], ds.sizes[X]))
        size, tw = self.window_options["size"], self.window_options["time_window"]
        windows = covering_windows(shapes, size=size, time_window=tw,
                                   stride=max(1, size - self.predict_overlap),
                                   time_stride=max(1, tw - min(self.predict_overlap, tw // 2)))
        self.predict_shapes = shapes
        self.predict_dataset = CubeDataset(
            self.cubes, windows, variables=self.variables, target_variables=self.target_variables,
            transform=Compose([Preprocess(self.params, channel_axis=-4), FillMissing()]),
            seed=self.seed, cache_mb=self.cache_mb)
        return self._loader(self.predict_dataset, train=False)


# ---------------------------------------------------------------------------- task


def _hide_dates(valid, *, rate: tuple[float, float], spans: int, max_span: int, generator):
    """Whole dates hidden per sample (clouds over the window): random dates plus spans."""
    b, n_t = valid.shape[0], valid.shape[2]
    share = torch.empty(b, 1).uniform_(rate[0], rate[1], generator=generator)
    hide = torch.rand(b, n_t, generator=generator) < share
    steps = torch.arange(n_t)[None]
    for _ in range(spans):  # a loop over spans, vectorised over samples
        start = torch.randint(-max_span // 2, n_t, (b, 1), generator=generator)
        length = torch.randint(1, max_span + 1, (b, 1), generator=generator)
        hide |= (steps >= start) & (steps < start + length)
    return hide.to(valid.device)[:, None, :, None, None] & valid


def interpolate_time(values, valid):
    """Linear interpolation along time (axis 2) of ``values`` between ``valid`` steps, vectorised.

    Steps before the first (after the last) valid one take its value; series without any valid
    step give 0. Time steps are taken as equally spaced (fusecube periods are).
    """
    n_t = values.shape[2]
    step = torch.arange(n_t, device=values.device).view(1, 1, n_t, 1, 1).expand_as(values)
    prev = torch.where(valid, step, torch.full_like(step, -1)).cummax(dim=2).values
    nxt = torch.where(valid, step, torch.full_like(step, n_t)).flip(2).cummin(dim=2).values.flip(2)
    has_prev, has_next = prev >= 0, nxt < n_t
    v_prev = values.gather(2, prev.clamp(min=0))
    v_next = values.gather(2, nxt.clamp(max=n_t - 1))
    frac = (step - prev).to(values.dtype) / (nxt - prev).clamp(min=1).to(values.dtype)
    both = v_prev + frac * (v_next - v_prev)
    one = torch.where(has_prev, v_prev, torch.where(has_next, v_next, torch.zeros_like(values)))
    return torch.where(has_prev & has_next, both, one)


def observed(batch):
    """``(B, 1, T, Y, X)`` bool: usable NDVI observations of a batch.

    A date whose observed values in the window are all exactly 0 is a broken composite (as
    :func:`fusecube.fusion.neural.features.screen_zero_periods` finds per scene), not vegetation.
    """
    valid = batch["target_mask"]
    some = valid.any(dim=(-2, -1), keepdim=True)
    zero = ((batch["target"] == 0) | ~valid).all(dim=(-2, -1), keepdim=True)
    return valid & ~(some & zero)


class CubeFusionTask(lightning.LightningModule):
    """Gap-filling NDVI cubes with a 3-D U-Net: S1 + masked NDVI + validity in, NDVI out.

    Args:
        depth: U-Net resolution levels.
        width: Channels of the first level (doubled per level).
        time_pool: Also down-sample time.
        dropout: Decoder dropout.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (network only).
        hide_rate: Range of the share of observed dates hidden per training sample.
        hide_spans: Contiguous spans of dates hidden per training sample.
        max_span: Longest hidden span, time steps.
        holdout_dates: Date indices of the cube never shown nor used as targets in training;
            validation scores them separately (``val_rmse_heldout_dates``).
        learn_weights: Learn the loss weights (homoscedastic uncertainty); False: fixed.
        loss_log_vars: Initial log-variance per term (``observation``, ``range``,
            ``smoothness``, ``s1_change``); weight = exp(-value).
        ndvi_range: Physical NDVI range for the range term and the output clip.
        s1_scale: Radar change (normalised dB) at which the S1-change penalty falls to 1/e.
        val_hide_rate: Share of observed dates hidden in validation (seeded, same each epoch).
        seed: Seed of the hiding draws.
        compile: ``torch.compile`` the network (CUDA).
        channels_last: Channels-last-3d memory format (CUDA, mixed precision).
    """

    def __init__(self, *, depth: int = 3, width: int = 16, time_pool: bool = False, dropout: float = 0.0,
                 lr: float = 2e-3, weight_decay: float = 1e-4, hide_rate: tuple[float, float] = (0.2, 0.6),
                 hide_spans: int = 1, max_span: int = 6, holdout_dates: list[int] | None = None,
                 learn_weights: bool = True, loss_log_vars: dict[str, float] | None = None,
                 ndvi_range: tuple[float, float] = (-1.0, 1.0), s1_scale: float = 0.5,
                 val_hide_rate: float = 0.3, seed: int = 0, compile: bool = False,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        unknown = set(loss_log_vars or {}) - set(TERMS)
        if unknown:
            raise CubeModelError(f"--model.loss_log_vars has unknown term(s) {sorted(unknown)}; "
                                 f"use {list(TERMS)}.")
        self.net = UNet3D(len(INPUT_CHANNELS), 1, depth=depth, width=width, time_pool=time_pool,
                          dropout=dropout)
        torch.nn.init.zeros_(self.net.head.weight)  # start as linear gap-filling, learn the correction
        torch.nn.init.zeros_(self.net.head.bias)
        self.weighting = UncertaintyWeighting(TERMS, init=loss_log_vars, learnable=learn_weights)
        self._forward = self.net
        self.holdout = torch.tensor(sorted(holdout_dates or []), dtype=torch.long)
        from torchmetrics import MeanSquaredError, R2Score

        self.val_mse, self.val_mse_held, self.val_r2 = MeanSquaredError(), MeanSquaredError(), R2Score()

    # -- plumbing
    def configure_model(self) -> None:
        """GPU speed-ups: TF32 matmuls/convolutions, channels-last, ``torch.compile``."""
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last_3d)
        if self.hparams.compile and self._forward is self.net:
            self._forward = torch.compile(self.net)  # weights stay under self.net in checkpoints

    def configure_optimizers(self):
        """AdamW; no weight decay on the loss weights."""
        return torch.optim.AdamW([
            {"params": self.net.parameters(), "weight_decay": self.hparams.weight_decay},
            {"params": [p for p in self.weighting.parameters() if p.requires_grad], "weight_decay": 0.0},
        ], lr=self.hparams.lr)

    def inputs(self, image, mask, ndvi, shown):
        """Network input ``(B, 6, T, Y, X)`` from a batch and the NDVI values to show."""
        s1_valid = mask.all(dim=1, keepdim=True)
        vv, vh = image[:, 0:1] * s1_valid, image[:, 1:2] * s1_valid
        interp = interpolate_time(ndvi * shown, shown)
        x = torch.cat([vv, vh, vh - vv, ndvi * shown, shown.to(ndvi.dtype), s1_valid.to(ndvi.dtype), interp],
                      dim=1)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def forward(self, x):
        """NDVI ``(B, 1, T, Y, X)`` from the network input (unclipped): interpolation + correction."""
        return x[:, -1:] + self._forward(x)

    def _held(self, batch):
        """``(B, 1, T, 1, 1)`` bool: the held-out dates inside each window."""
        n_t = batch["target"].shape[2]
        absolute = batch["time"].reshape(-1, 1).cpu() + torch.arange(n_t)[None]
        held = torch.isin(absolute, self.holdout) if self.holdout.numel() else torch.zeros_like(absolute,
                                                                                               dtype=torch.bool)
        return held.to(batch["target"].device)[:, None, :, None, None]

    def losses(self, pred, batch, hidden, shown) -> dict:
        """The four loss terms (float32) for a prediction."""
        pred = pred.float()
        obs = batch["target"]
        low, high = self.hparams.ndvi_range
        return {"observation": masked_mse(pred, obs, hidden) + masked_mse(pred, obs, shown),
                "range": range_loss(pred, low, high),
                "smoothness": smoothness_loss(pred),
                "s1_change": s1_change_loss(pred, batch["image"] * batch["mask"], batch["mask"],
                                            scale=self.hparams.s1_scale)}

    # -- steps
    def training_step(self, batch, batch_idx):
        """Hide random dates, predict them back; weighted physics-style loss."""
        valid = observed(batch) & ~self._held(batch)
        g = torch.Generator().manual_seed(int(self.hparams.seed) * 1_000_003 + int(self.global_step) * 17
                                          + int(self.global_rank))
        hidden = _hide_dates(valid, rate=tuple(self.hparams.hide_rate), spans=self.hparams.hide_spans,
                             max_span=self.hparams.max_span, generator=g)
        shown = valid & ~hidden
        pred = self(self.inputs(batch["image"], batch["mask"], batch["target"], shown))
        terms = self.losses(pred, batch, hidden, shown)
        loss = self.weighting(terms)
        n = batch["target"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"loss_{k}": v.detach() for k, v in terms.items()}, batch_size=n)
        self.log_dict({f"weight_{k}": v for k, v in self.weighting.weights().items()}, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        """Score hidden observations (seeded dates and the held-out dates) in held-out blocks."""
        usable = observed(batch)
        held = self._held(batch) & usable
        valid = usable & ~held
        g = torch.Generator().manual_seed(int(self.hparams.seed) + 7919 * int(batch_idx))
        rate = float(self.hparams.val_hide_rate)
        hidden = _hide_dates(valid, rate=(rate, rate), spans=1, max_span=self.hparams.max_span,
                             generator=g) | held
        shown = valid & ~hidden
        pred = self(self.inputs(batch["image"], batch["mask"], batch["target"], shown)).float()
        low, high = self.hparams.ndvi_range
        pred = pred.clamp(low, high)
        obs = batch["target"]
        if hidden.any():
            self.val_mse.update(pred[hidden], obs[hidden])
            self.val_r2.update(pred[hidden], obs[hidden])
        if held.any():
            self.val_mse_held.update(pred[held], obs[held])
        self.log("val_loss", masked_mse(pred, obs, hidden), batch_size=obs.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """RMSE and R² over all hidden validation observations of the epoch (synced across ranks)."""
        for name, metric in (("val_rmse", self.val_mse), ("val_rmse_heldout_dates", self.val_mse_held)):
            if int(metric.total) > 0 or self.trainer.world_size > 1:
                self.log(name, metric.compute().sqrt())
            metric.reset()
        if self.val_r2.total > 1 or self.trainer.world_size > 1:
            self.log("val_r2", self.val_r2.compute())
        self.val_r2.reset()

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """NDVI over the window from every observation (clipped to the NDVI range)."""
        shown = observed(batch)
        pred = self(self.inputs(batch["image"], batch["mask"], batch["target"], shown)).float()
        return {"ndvi": pred.clamp(*self.hparams.ndvi_range)[:, 0].cpu(),
                **{k: batch[k].cpu() for k in ("source", "time", "row", "col")}}

    # -- records
    def record(self) -> dict:
        """What produced this model: data hash, statistics, split, hyperparameters, versions."""
        from fusecube import __version__

        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        state = dm.state_dict() if dm is not None and hasattr(dm, "state_dict") else {}
        return {"data": state.get("data_manifest"), "preprocessing": state.get("preprocessing"),
                "split": state.get("split"), "cubes": state.get("cubes"),
                "hparams": json.loads(json.dumps(dict(self.hparams), default=list)),
                "loss_weights": self.weighting.weights(),
                "versions": {"fusecube": __version__, "torch": torch.__version__,
                             "lightning": lightning.__version__}}

    def on_fit_start(self) -> None:
        """Write the run record (data hash, params) beside the logs before the first step."""
        if self.trainer.logger is None:  # no run folder: the record stays in the checkpoints
            return
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank must ask
        if self.trainer.is_global_zero and log_dir:
            path = Path(log_dir) / RECORD_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.record(), indent=1, default=str))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the run record in the checkpoint (JSON types only: loadable with weights_only)."""
        checkpoint["fusecube_record"] = json.loads(json.dumps(self.record(), default=str))


def checkpoint_record(path: str | os.PathLike) -> dict:
    """The run record stored in a cube-model checkpoint (data hash, statistics, params)."""
    path = Path(path)
    if not path.exists():
        raise CubeModelError(f"Checkpoint {path} does not exist; train with `fusecube train fit`.")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "fusecube_record" not in ckpt:
        raise CubeModelError(f"{path} is not a fusecube cube-model checkpoint (no run record).")
    return ckpt["fusecube_record"]


# ---------------------------------------------------------------------------- writer


def _tent(n: int) -> np.ndarray:
    """Blending weights along a window axis: highest in the middle, > 0 at the edges."""
    i = np.arange(n, dtype=np.float32)
    return np.minimum(i + 1, n - i)


class FusedCubeWriter(BasePredictionWriter):
    """Write ``ndvi_fused`` cubes from ``predict``: observed NDVI kept, gaps from the model.

    Overlapping windows are blended with tent weights. Each input cube ``ROOT/a/cube.zarr``
    becomes ``output_dir/a/cube.zarr`` (its variables plus ``ndvi_fused``), written atomically.

    Args:
        output_dir: Folder of the fused cubes (None: write nothing).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.written: list[Path] = []
        self._acc: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        """Reset the accumulators; predicting on several devices is refused (one writer)."""
        if self.output_dir is not None and trainer.world_size > 1:
            raise CubeModelError("`fusecube train predict` writes one cube per input from one process; "
                                 "run it with --trainer.devices 1.")
        self._acc, self.written = {}, []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:
        """Add the batch's windows to the running weighted sums."""
        if self.output_dir is None:
            return
        shapes = trainer.datamodule.predict_shapes
        ndvi = prediction["ndvi"].numpy()
        _, n_t, size, _ = ndvi.shape
        weight = _tent(n_t)[:, None, None] * _tent(size)[None, :, None] * _tent(size)[None, None, :]
        for k in range(ndvi.shape[0]):  # a loop over windows of the batch, not pixels
            src, t, r, c = (int(prediction[key][k]) for key in ("source", "time", "row", "col"))
            if src not in self._acc:
                self._acc[src] = (np.zeros(shapes[src], np.float32), np.zeros(shapes[src], np.float32))
            total, wsum = self._acc[src]
            sel = (slice(t, t + n_t), slice(r, r + size), slice(c, c + size))
            total[sel] += weight * ndvi[k]
            wsum[sel] += weight

    def on_predict_end(self, trainer, pl_module) -> None:
        """Write one fused cube per input cube."""
        if self.output_dir is None:
            return
        dm = trainer.datamodule
        digest = ((dm.restored or {}).get("data_manifest") or {}).get("digest", "")
        for src, (total, wsum) in sorted(self._acc.items()):
            cube = dm.cubes[src]
            ds = read_cube(cube, chunks={})
            obs = ds[NDVI].transpose(*DIMS).values
            n_t = obs.shape[0]
            obs = screen_zero_periods(obs.reshape(n_t, -1).T).T.reshape(obs.shape)
            with np.errstate(invalid="ignore", divide="ignore"):
                model = total / wsum
            fused = np.where(np.isfinite(obs), obs, model).astype(np.float32)
            out = ds.assign({NDVI_FUSED: (DIMS, fused, {**CF_ATTRS[NDVI_FUSED], "gapfill_method": "unet3d",
                                                        "training_data_digest": digest})})
            rel = cube.relative_to(dm.zarr_root) if cube != dm.zarr_root else Path(cube.name)
            path = write_cube(out, self.output_dir / rel)
            log.info("fused cube %s", path)
            self.written.append(path)


# ---------------------------------------------------------------------------- CLI


def _cli_class():
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    class CubeCLI(LightningCLI):
        """LightningCLI with checkpointing, early stopping and the fused-cube writer wired in."""

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.monitor": "val_rmse", "checkpoint.mode": "min",
                                 "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}-{step}"})
            parser.add_lightning_class_args(EarlyStopping, "early_stopping")
            parser.set_defaults({"early_stopping.monitor": "val_rmse", "early_stopping.mode": "min",
                                 "early_stopping.patience": 10, "early_stopping.strict": False})
            parser.add_lightning_class_args(FusedCubeWriter, "writer")

    return CubeCLI


def cli_main(args: Sequence[str] | None = None, *, run: bool = True):
    """``fusecube train fit|validate|predict``: the LightningCLI of the cube model.

    Args:
        args: Command-line arguments (default ``sys.argv[1:]``).
        run: Run the subcommand (False: only build the objects).

    Returns:
        The LightningCLI object (its ``trainer``, ``model``, ``datamodule``).
    """
    import warnings

    cli_class = _cli_class()
    with warnings.catch_warnings():
        # `fusecube train ...` passes its own arguments while sys.argv holds the whole command
        # line (kept intact: the DDP launcher starts the other ranks from it).
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return cli_class(
            CubeFusionTask, CubeFusionDataModule, args=None if args is None else list(args),
            run=run, seed_everything_default=0, save_config_kwargs={"overwrite": True},
            trainer_defaults={"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                         "init_args": {"save_dir": "runs", "name": "cube_model"}},
                              "log_every_n_steps": 10},
        )
