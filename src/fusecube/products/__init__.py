"""Writers of a run's outputs: NetCDF/COG, figures, the HTML report, block calendars, paddy products."""
