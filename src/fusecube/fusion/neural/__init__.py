"""Neural S1→NDVI fusion: features, model, training, prediction, validation."""
