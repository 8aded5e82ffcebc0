"""Data sources: synthetic scenes, STAC catalogues, GeoTIFF stacks."""
