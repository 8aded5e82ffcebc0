"""A Demak-like synthetic scene with ground truth, deterministic from a seed.

Land: sea and fish ponds along a northern coast, settlements, trees, other crops and rice
paddy laid out as irrigation blocks (Voronoi cells, also written as polygons). Rice blocks
grow 2 or 3 seasons a year with transplanting dates shared within a block and drifting in
waves across blocks. Each season: flooding (low NDVI, specular radar), green-up, peak,
senescence, harvest, stubble.

Radar follows a water-cloud model with gamma speckle (ENL ~4.5); VV carries more soil
moisture than VH, so VH tracks the canopy better. ``SceneConfig.radar_skill`` (1 by default)
weakens that link down to none, keeping each pixel's backscatter mean, variance and
autocorrelation (a ruler for methods that rely on S1). Optical NDVI is the truth plus noise,
hidden by spatially clustered clouds (>=70 % in the wet season, ~30 % in the dry one), with
haze at cloud edges, one fully clouded period and one period of bad zeros.

- :mod:`~fusecube.sources.synthetic.scene` – :class:`~fusecube.sources.synthetic.scene.SceneConfig`
  and the land classes.
- :mod:`~fusecube.sources.synthetic.layout` – classes, irrigation blocks, calendars, clouds.
- :mod:`~fusecube.sources.synthetic.curves` – NDVI curves and the water-cloud radar model.
- :mod:`~fusecube.sources.synthetic.tiles` – one tile of cube and truth at a time.
- :mod:`~fusecube.sources.synthetic.writer` – :func:`~fusecube.sources.synthetic.writer.synthesize`:
  ``cube.zarr``, ``truth.zarr`` and ``blocks.gpkg``.
"""
