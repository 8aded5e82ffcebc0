"""The cube model's training logic: :class:`CubeFusionTask` (LightningModule).

It hides observed NDVI dates at random (like clouds), asks the
:class:`~fusecube.ml.models.UNet3D` to give them back from the radar series and the dates
left, and trains on the physics-style loss terms combined with learnable
homoscedastic-uncertainty weights. Validation scores hidden observations in held-out spatial
blocks (the DataModule's split) and on held-out dates (``holdout_dates``), which are never
shown nor used as targets in training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fusecube.errors import CubeModelError, require
from fusecube.ml.models.losses import (
    TERMS,
    UncertaintyWeighting,
    masked_mse,
    range_loss,
    s1_change_loss,
    smoothness_loss,
)
from fusecube.ml.models.unet3d import UNet3D

torch = require("torch", "ml")
lightning = require("lightning", "ml")


#: Input channels of the network: S1 (vv, vh, vh - vv; normalised dB), masked NDVI, NDVI shown,
#: S1 valid, and the shown NDVI linearly interpolated in time (the prediction is a correction
#: of it, so an untrained network starts as linear gap-filling).
INPUT_CHANNELS: tuple[str, ...] = ("vv", "vh", "vh_minus_vv", "ndvi_masked", "ndvi_valid", "s1_valid",
                                   "ndvi_interp")


RECORD_NAME = "run-record.json"
#: Options that shape the network's weights: a checkpoint only loads into the same ones.
ARCH_OPTIONS: tuple[str, ...] = ("depth", "width", "time_pool", "learn_weights")


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
        # linear gap-filling scored on the same hidden values: the baseline the U-Net must beat
        self.val_mse_linear, self.val_mse_held_linear = MeanSquaredError(), MeanSquaredError()
        self.heldout_scores: dict | None = None

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
        x = self.inputs(batch["image"], batch["mask"], batch["target"], shown)
        pred = self(x).float()
        low, high = self.hparams.ndvi_range
        pred, linear = pred.clamp(low, high), x[:, -1:].float().clamp(low, high)
        obs = batch["target"]
        if hidden.any():
            self.val_mse.update(pred[hidden], obs[hidden])
            self.val_r2.update(pred[hidden], obs[hidden])
            self.val_mse_linear.update(linear[hidden], obs[hidden])
        if held.any():
            self.val_mse_held.update(pred[held], obs[held])
            self.val_mse_held_linear.update(linear[held], obs[held])
        self.log("val_loss", masked_mse(pred, obs, hidden), batch_size=obs.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """RMSE and R² over all hidden validation observations of the epoch (synced across ranks).

        Linear gap-filling is scored on the same values (``val_rmse_linear``,
        ``val_rmse_heldout_dates_linear``); :attr:`heldout_scores` keeps the comparison for the
        run record.
        """
        scores = {}
        for name, metric in (("val_rmse", self.val_mse), ("val_rmse_heldout_dates", self.val_mse_held),
                             ("val_rmse_linear", self.val_mse_linear),
                             ("val_rmse_heldout_dates_linear", self.val_mse_held_linear)):
            if int(metric.total) > 0 or self.trainer.world_size > 1:
                value = metric.compute().sqrt()
                self.log(name, value)
                scores[name] = float(value)
            metric.reset()
        if "val_rmse" in scores and "val_rmse_linear" in scores:
            self.heldout_scores = heldout_comparison(scores)
        if self.val_r2.total > 1 or self.trainer.world_size > 1:
            self.log("val_r2", self.val_r2.compute())
        self.val_r2.reset()

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """NDVI over the window from every observation (clipped to the NDVI range)."""
        shown = observed(batch)
        pred = self(self.inputs(batch["image"], batch["mask"], batch["target"], shown)).float()
        return {"ndvi": pred.clamp(*self.hparams.ndvi_range)[:, 0].cpu(),
                **{k: batch[k].cpu() for k in ("source", "time", "row", "col")}}

    # -- held-out comparison with linear gap-filling
    def on_fit_end(self) -> None:
        """Say how the U-Net compares with linear gap-filling on held-out data."""
        from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

        scores = self.heldout_scores
        if scores is None:
            rank_zero_warn("No held-out validation ran: nothing says this U-Net beats linear "
                           "gap-filling. Let validation run (--trainer.limit_val_batches > 0).")
            return
        line = comparison_line(scores)
        (rank_zero_info if scores["beats_linear"] else rank_zero_warn)(line)

    def on_predict_start(self) -> None:
        """Warn before predicting with a checkpoint that did not beat linear gap-filling."""
        from lightning.pytorch.utilities import rank_zero_warn

        scores = self.heldout_scores
        if scores is not None and not scores.get("beats_linear", True):
            rank_zero_warn(comparison_line(scores) + " Its predictions are worse than "
                           "`gapfill: linear`; train longer or use `gapfill: fusion`.")

    # -- records
    def record(self) -> dict:
        """What produced this model: data hash, statistics, split, hyperparameters, versions."""
        from fusecube import __version__

        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        state = dm.state_dict() if dm is not None and hasattr(dm, "state_dict") else {}
        return {"data": state.get("data_manifest"), "preprocessing": state.get("preprocessing"),
                "split": state.get("split"), "cubes": state.get("cubes"),
                "hparams": json.loads(json.dumps(dict(self.hparams), default=list)),
                "loss_weights": self.weighting.weights(), "heldout": self.heldout_scores,
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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint of another network before Lightning loads its weights.

        Raises:
            CubeModelError: Naming the options (and weight shapes) that differ, and the fix.
        """
        self.heldout_scores = (checkpoint.get("fusecube_record") or {}).get("heldout")
        saved = checkpoint.get("hyper_parameters") or {}
        differ = [f"--model.{k} {saved[k]!r} (this model: {self.hparams[k]!r})"
                  for k in ARCH_OPTIONS if k in saved and saved[k] != self.hparams[k]]
        mine = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in (checkpoint.get("state_dict") or {}).items()}
        shapes = [f"{k}: checkpoint {theirs[k]}, model {mine[k]}" for k in mine
                  if k in theirs and theirs[k] != mine[k]]
        if differ or shapes:
            raise CubeModelError(
                "The checkpoint holds another network than the one these options build: it was "
                f"trained with {', '.join(differ) or 'other options'}"
                + (f" ({'; '.join(shapes[:2])})" if shapes else "")
                + ". Pass the --model.* options of its training run (its config.yaml), or train "
                "a model with these options.")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the run record in the checkpoint (JSON types only: loadable with weights_only)."""
        checkpoint["fusecube_record"] = json.loads(json.dumps(self.record(), default=str))


def heldout_comparison(scores: dict) -> dict:
    """U-Net vs linear gap-filling on held-out validation values (the run record's ``heldout``)."""
    out = {"unet_rmse": scores["val_rmse"], "linear_rmse": scores["val_rmse_linear"],
           "unet_rmse_heldout_dates": scores.get("val_rmse_heldout_dates"),
           "linear_rmse_heldout_dates": scores.get("val_rmse_heldout_dates_linear")}
    out["beats_linear"] = bool(out["unet_rmse"] < out["linear_rmse"] and (
        out["unet_rmse_heldout_dates"] is None or out["linear_rmse_heldout_dates"] is None
        or out["unet_rmse_heldout_dates"] < out["linear_rmse_heldout_dates"]))
    return out


def comparison_line(scores: dict) -> str:
    """One sentence: held-out RMSE of the U-Net beside linear gap-filling."""
    line = (f"Held-out RMSE: U-Net {scores['unet_rmse']:.4f} vs linear {scores['linear_rmse']:.4f}"
            " (hidden values in held-out blocks)")
    if scores.get("unet_rmse_heldout_dates") is not None and scores.get("linear_rmse_heldout_dates") is not None:
        line += (f"; held-out dates {scores['unet_rmse_heldout_dates']:.4f} vs "
                 f"{scores['linear_rmse_heldout_dates']:.4f}")
    return line + (": the U-Net beats linear gap-filling." if scores["beats_linear"]
                   else ": the U-Net does NOT beat linear gap-filling.")


def checkpoint_record(path: str | os.PathLike) -> dict:
    """The run record stored in a cube-model checkpoint (data hash, statistics, params)."""
    path = Path(path)
    if not path.exists():
        raise CubeModelError(f"Checkpoint {path} does not exist; train with `fusecube cube-model fit`.")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "fusecube_record" not in ckpt:
        raise CubeModelError(f"{path} is not a fusecube cube-model checkpoint (no run record).")
    return ckpt["fusecube_record"]
