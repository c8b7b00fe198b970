"""The experiment layer: specs, metrics, statistics, search, evaluation, verdict and report; no vault I/O."""
