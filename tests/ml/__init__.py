"""ML integrations: torch, safetensors, datasets."""
