"""Pipeline stages, each ``Dataset -> Dataset``: gapfill, smooth, phenology."""
