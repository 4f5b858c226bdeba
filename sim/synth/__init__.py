"""The synthetic DiffusionDB-style generator and its inputs: config and presets, request skeleton, text and vector
realisations, the real-prompt pool, and the bundled tiny trace's builder."""
