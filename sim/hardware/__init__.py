"""Hardware models: GPU latency profiles, storage tiers and the serving front end (embed + search)."""
