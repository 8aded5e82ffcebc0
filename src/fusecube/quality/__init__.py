"""Quality gates, thresholds and diagnostics: what is checked before, between and after the stages."""
