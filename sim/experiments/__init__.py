"""Experiments: config schema, sweeps, runner, results store, figures and tables."""
