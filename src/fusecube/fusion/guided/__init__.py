"""Radar-guided Whittaker for field series."""
