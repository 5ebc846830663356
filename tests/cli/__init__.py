"""The shardseal command."""
