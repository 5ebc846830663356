"""The one place that imports TenSEAL, with the message that names the extra."""

from __future__ import annotations

try:
    import tenseal
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("shardseal.he needs TenSEAL: pip install 'shardseal[he]'") from exc

__all__ = ["tenseal"]
