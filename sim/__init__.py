"""nirvana-sim: trace-driven simulator of approximate caching for text-to-image diffusion serving."""

__version__ = "0.1.0"
