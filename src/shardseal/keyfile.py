"""``shardseal.keyfile``, the documented import path of ``shardseal.keys.keyfile``.

Key files: how the ``shardseal`` command stores a 32-byte key on disk.

The code lives in ``shardseal.keys.keyfile`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .keys.keyfile import (  # noqa: F401
    KEY_LINE_PREFIX,
    KeyFileError,
    KeyFilePermissionWarning,
    format_key_file,
    parse_key_file,
    read_key_file,
    text_lines,
    write_key_file,
    PathLike,
    KEY_SIZE,
    MAX_KEY_FILE_SIZE,
)

__all__ = [
    "KEY_LINE_PREFIX",
    "KeyFileError",
    "KeyFilePermissionWarning",
    "format_key_file",
    "parse_key_file",
    "read_key_file",
    "text_lines",
    "write_key_file",
    "PathLike",
    "KEY_SIZE",
    "MAX_KEY_FILE_SIZE",
]
