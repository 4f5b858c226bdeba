"""How requests are carried out: real diffusers execution for validation (gpu)."""
