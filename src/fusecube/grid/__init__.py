"""Where and when: AOI/bbox/file/like= to one odc-geo GeoBox, time periods, block tiles."""
