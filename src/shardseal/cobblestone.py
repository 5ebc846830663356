"""``shardseal.cobblestone``, the documented import path of ``shardseal.core.cobblestone``.

Raw C2SP chunked encryption messages (https://c2sp.org/chunked-encryption).

The code lives in ``shardseal.core.cobblestone`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .core.cobblestone import (  # noqa: F401
    decrypt,
    decrypt_into,
    encrypt,
    encrypt_into,
    encrypted_size,
    decrypted_size,
)

__all__ = [
    "decrypt",
    "decrypt_into",
    "encrypt",
    "encrypt_into",
    "encrypted_size",
    "decrypted_size",
]
