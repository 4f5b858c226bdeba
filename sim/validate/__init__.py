"""Real-GPU validation: sample a simulated run's requests, execute them with diffusers, report Diff%."""
