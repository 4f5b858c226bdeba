"""Profilers that write profiles/ files from real measurements, with provenance."""
