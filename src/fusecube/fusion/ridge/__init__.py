"""Closed-form ridge S1→NDVI fusion."""
