"""Machine-learning integrations: torch tensors, safetensors files and datasets for data loaders."""
