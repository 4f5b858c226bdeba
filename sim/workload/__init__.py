"""Workloads: canonical trace format, readers, synthetic generators and embedders."""
