"""The evaluation step of a run: scores the finished result against the truth, when there is one.

The runner calls :func:`evaluate_run` as its own step between the blocks and the products;
the product writers only draw what it measured (:class:`Evaluation`), they never compute it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fusecube.cube import read_cube
from fusecube.evaluate.accuracy import HiddenSample, evaluate


@dataclass
class Evaluation:
    """What the evaluation step measured: metrics, and the sample drawn for the scatter figure."""

    metrics: dict = field(default_factory=dict)
    """Accuracy metrics (:func:`fusecube.evaluate.accuracy.evaluate`); empty without truth."""
    sample: HiddenSample = field(default_factory=HiddenSample)
    """Cloud-hidden paddy values (true, gap-filled, smoothed) drawn while scoring."""


def evaluate_run(result_path: str | Path, cube_path: str | Path, truth_path: str | Path | None,
                 *, block: int = 256) -> Evaluation:
    """Score a run's result store against its truth; an empty :class:`Evaluation` without one.

    Args:
        result_path: The run's ``result.zarr``.
        cube_path: The input cube (observed NDVI: which values clouds hid).
        truth_path: The synthetic truth store, or None (real data: nothing to score here).
        block: Block edge in pixels for streaming.
    """
    evaluation = Evaluation()
    if truth_path is None:
        return evaluation
    result = read_cube(result_path, chunks={})
    cube = read_cube(cube_path, chunks={})
    truth = read_cube(truth_path, chunks={})
    evaluation.metrics = evaluate(result, cube, truth, block=block, sample=evaluation.sample)
    return evaluation
