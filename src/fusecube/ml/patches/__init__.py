"""Fixed-size patches from cubes to ``.npy`` shards ``(N, C, H, W)`` float32 + ``metadata.json``.

- :mod:`~fusecube.ml.patches.export` – walk cubes block by block, skip/fill invalid
  patches, write a patch set atomically (:func:`~fusecube.ml.patches.export.export_patches`).
- :mod:`~fusecube.ml.patches.shards` – the on-disk format: shard files and ``metadata.json``.
- :mod:`~fusecube.ml.patches.patch_set` – open a patch set, memory-map its shards, stream
  chunks of selected patches.
- :mod:`~fusecube.ml.patches.verify` – check a patch set against its metadata.
"""
