"""Paddy masks: vector and raster files, and masks detected from the time series."""
