"""shardseal: fast authenticated encryption for machine-learning data.

Containers are C2SP Cobblestone messages (chunked AES-GCM) behind a small header; a native
C++ engine does the bulk work on all cores, with a byte-identical pure-Python fallback.

    >>> import shardseal
    >>> key = shardseal.generate_key()
    >>> blob = shardseal.encrypt(b"weights", key, metadata={"name": "demo"})
    >>> shardseal.decrypt(blob, key)
    b'weights'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core import backend as _backend, cobblestone
from . import errors
from .core.backend import backend_info
from .container.blob import (
    ContainerInfo,
    StanzaInfo,
    clear_key_cache,
    decrypt,
    decrypt_array,
    decrypt_into,
    decrypted_size,
    encrypt,
    encrypt_array,
    encrypt_into,
    encrypted_size,
    generate_key,
    inspect,
)
from .io.files import decrypt_file, encrypt_file, open
from .io.stream import DecryptingReader, EncryptingWriter
from .keys.envelope import Identity, Recipient, WrapContext
from .errors import (
    AuthenticationError,
    FormatError,
    HsmError,
    IdentityFileError,
    KeyFileError,
    KeyLoadError,
    KeyNotFoundError,
    KeySpecError,
    KeyringFileError,
    KmsError,
    ManifestChangedError,
    Pkcs11LoginError,
    ShardMismatchError,
    ShardsealError,
    TruncatedError,
    WrongPassphraseError,
)

if TYPE_CHECKING:
    # Imported on first use by __getattr__ below; declared here for type checkers.
    from .io.cleanup import clean_temp_files
    from .ops.rotation import RotationReport, rotate

    backend: str

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ContainerInfo",
    "DecryptingReader",
    "EncryptingWriter",
    "FormatError",
    "HsmError",
    "Identity",
    "IdentityFileError",
    "KeyFileError",
    "KeyLoadError",
    "KeyNotFoundError",
    "KeySpecError",
    "KeyringFileError",
    "KmsError",
    "ManifestChangedError",
    "Pkcs11LoginError",
    "Recipient",
    "RotationReport",
    "ShardMismatchError",
    "ShardsealError",
    "StanzaInfo",
    "TruncatedError",
    "WrapContext",
    "WrongPassphraseError",
    "backend",
    "backend_info",
    "clean_temp_files",
    "clear_key_cache",
    "cobblestone",
    "decrypt",
    "decrypt_array",
    "decrypt_file",
    "decrypt_into",
    "decrypted_size",
    "encrypt",
    "encrypt_array",
    "encrypt_file",
    "encrypt_into",
    "encrypted_size",
    "errors",
    "generate_key",
    "inspect",
    "open",
    "rotate",
]


def __getattr__(name: str) -> Any:
    # `backend` is looked up on each access: "native" or "python".
    if name == "backend":
        return _backend.name
    # Rotation is imported on first use: a large module that readers and DataLoader workers,
    # which import shardseal in every process, never need.
    if name in ("rotate", "RotationReport"):
        from .ops import rotation
        return getattr(rotation, name)
    if name == "clean_temp_files":
        from .io import cleanup
        return cleanup.clean_temp_files
    raise AttributeError(f"module 'shardseal' has no attribute {name!r}")
