"""Training a fusion model on a cube store (``fusecube fuse train``) and summarising it.

Fine-tuning a pretrained model defaults to fewer passes and steps than training from scratch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fusecube.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from fusecube.fusion.neural.model import NeuralFusion

#: Network architectures ``--arch`` accepts.
ARCHS = ("conv", "gru", "mlp")
#: Passes and fewest optimiser steps when fine-tuning (``init`` given).
FINE_TUNE_EPOCHS, FINE_TUNE_MIN_STEPS = 2, 50


def train_on_cube(cube: Path, out: Path, *, init: Path | None = None, epochs: int | None = None,
                  min_steps: int | None = None, arch: str = "conv", width: int = 16,
                  max_pixels: int = 30_000, seed: int = 0, device: str = "auto",
                  threads: int | None = None) -> tuple[NeuralFusion, Path]:
    """Train a fusion model on the cube store ``cube`` and write it to ``out``.

    Args:
        cube: Cube zarr store with ``vv``, ``vh`` and ``ndvi``.
        out: Model file to write.
        init: Pretrained model to fine-tune (same time grid).
        epochs: Passes over the training pixels (default: the config's, or 2 when fine-tuning).
        min_steps: Fewest optimiser steps (default: the config's, or 50 when fine-tuning).
        arch: One of :data:`ARCHS`.
        width: Hidden channels.
        max_pixels: Cap on training pixels.
        seed: Random seed.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: CPU threads for torch (None: every core).

    Returns:
        The trained model and the path it was written to.

    Raises:
        ConfigError: An unknown architecture.
    """
    from fusecube.cube import read_cube, validate_cube
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.train import TrainConfig

    if arch not in ARCHS:
        raise ConfigError(f"--arch {arch!r}: use conv, gru or mlp.")
    ds = validate_cube(read_cube(cube, chunks={}))
    config = TrainConfig(arch=arch, width=width, max_train_pixels=max_pixels, seed=seed,
                         device=device, threads=threads)
    start = NeuralFusion.load(init) if init is not None else None
    if start is not None:
        config = replace(config, epochs=epochs or FINE_TUNE_EPOCHS,
                         min_steps=min_steps or FINE_TUNE_MIN_STEPS)
    else:
        config = replace(config, epochs=epochs or config.epochs,
                         min_steps=min_steps or config.min_steps)
    model = NeuralFusion(config).fit(ds, init=start)
    return model, model.save(out)


def metrics_lines(metrics: dict) -> list[str]:
    """Lines comparing fusion with the baselines on each validation test."""
    lines = []
    for test in ("heldout_dates", "heldout_spans"):
        if test not in metrics:
            continue
        where = "training pixels" if metrics.get("pixels_seen") else "held-out blocks"
        lines.append(f"{test} ({where}): RMSE / R²")
        groups = [g for g in ("all", "paddy", "paddy_wet", "paddy_dry")
                  if g in metrics[test]["fusion"]]
        lines.append(f"  {'method':<21}" + "".join(f"{g:>18}" for g in groups))
        for method, scores in metrics[test].items():
            cells = "".join(f"{scores[g]['rmse']:>10.4f} / {scores[g]['r2']:>5.2f}" for g in groups)
            lines.append(f"  {method:<21}{cells}")
    return lines


def training_lines(model: NeuralFusion, *, fine_tuned: bool) -> list[str]:
    """What was trained, how long it took, on which device, and its validation scores."""
    meta = model.meta_
    return [f"trained on {meta['trained_on']['train_pixels']} pixels in "
            f"{meta['seconds']['train']:.1f} s ({'fine-tuned' if fine_tuned else 'from scratch'}, "
            f"{meta['device']})", *size_lines(meta.get("model_size")),
            *metrics_lines(model.metrics_)]


def size_lines(record: dict | None) -> list[str]:
    """The model-size choice (``meta["model_size"]``) when more than one size was trained."""
    if not record or len(record.get("candidates", [])) < 2:
        return []
    scores = ", ".join(f"width {c['width']} ({c['train_pixels']} px): {c['validation_rmse']:.4f}"
                       for c in record["candidates"])
    return [f"model size: width {record['chosen_width']} kept (validation RMSE {scores})"]
