"""Importers and trace statistics: DiffusionDB in, and the statistics of any canonical trace."""
