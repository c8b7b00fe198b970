"""Experiment layer: spec parsing, text metrics and confidence intervals, free of any vault I/O."""
