"""Paddy masks: vector and raster files, and masks detected from the time series.

- :mod:`~fusecube.masks.resolve` – one resolver for ``cube``, ``auto``, ``none`` or a file.
- :mod:`~fusecube.masks.vector`, :mod:`~fusecube.masks.raster` – masks from files, on the
  cube grid, each with a :class:`~fusecube.masks.report.MaskReport`.
- :mod:`~fusecube.masks.paddy` – the detection stage (``mask: auto``), built on
  :mod:`~fusecube.masks.paddy_features`, :mod:`~fusecube.masks.paddy_rules`,
  :mod:`~fusecube.masks.paddy_classifier` and :mod:`~fusecube.masks.paddy_labels`.
- :mod:`~fusecube.masks.area` – areas on a grid and the minimum-mapping-unit clean-up.
"""
