"""Gap-fill methods, one package each, plus the baselines.

``neural`` (trained S1→NDVI network), ``ridge`` (closed-form S1 fusion fitted per block),
``guided`` (radar-guided Whittaker for field series),
and ``baselines`` (linear and Whittaker-only). :func:`fusecube.stages.gapfill.gapfill` picks one.
"""
