"""Machine-learning data for fusecube: SAR preprocessing, patch export, datasets, splits.

Split by role (TorchGeo manners):

- :mod:`fusecube.ml.sar` – invalid values, dB, clip bounds, normalisation (numpy only).
- :mod:`fusecube.ml.patches` – fixed-size patches from cubes to ``.npy`` shards + metadata.
- :mod:`fusecube.ml.samplers` – where to read: spatial-block splits with a buffer, held-out
  dates, cube windows, seeded shuffling.
- :mod:`fusecube.ml.transforms` – compute on sample dicts (preprocess, flips/rotations).
- :mod:`fusecube.ml.datasets` – I/O + index: in-memory and memory-mapped patch datasets,
  a lazy 4-D cube dataset (needs torch).
- :mod:`fusecube.ml.datamodules` – Lightning DataModules, wiring only (needs lightning).

Only ``datasets`` and ``datamodules`` import torch/lightning, so ``import fusecube`` and
patch export work without the ``ml`` extra.
"""
