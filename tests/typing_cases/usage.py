"""Correct uses of the public API (as in the README) that mypy --strict must accept.

Checked by tests/test_typing.py (never run, never imported).
"""

import mmap
from pathlib import Path
from typing import Any

import numpy as np

import shardseal
from shardseal import keyring, passphrase, x25519
from shardseal.keyref import EnvKey, KeyFile


def tour(folder: Path, ring: keyring.Keyring, identity: x25519.X25519Identity) -> None:
    key: bytes = shardseal.generate_key()
    blob: bytes = shardseal.encrypt(b"weights", key, metadata={"name": "demo"}, threads=1)
    assert shardseal.decrypt(blob, key) == b"weights"
    shardseal.decrypt(memoryview(blob), bytearray(key), threads=None)
    shardseal.decrypt(shardseal.encrypt(b"x", KeyFile(folder / "team.key")), EnvKey("SHARDSEAL_KEY"))
    with shardseal.open(folder / "x.sseal", "rb", KeyFile("team.key")) as by_reference:
        by_reference.read()
    shardseal.encrypt(np.arange(10, dtype=np.float32), key, suite=128)
    with open(folder / "data.bin", "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        shardseal.encrypt(mapped, key)

    out = bytearray(shardseal.encrypted_size(7, metadata=None))
    written: int = shardseal.encrypt_into(b"weights", key, out)
    plain = np.empty(shardseal.decrypted_size(out[:written]), np.uint8)
    shardseal.decrypt_into(out[:written], key, plain)

    array: np.ndarray[Any, Any] = shardseal.decrypt_array(shardseal.encrypt_array(np.eye(3), key), key)
    assert array.shape == (3, 3)

    sealed = shardseal.encrypt(b"x", recipients=[ring.recipient("team"), identity.recipient, "ssealx1..."])
    shardseal.decrypt(sealed, identities=[ring, identity])
    shardseal.decrypt(sealed, identities=identity)
    shardseal.encrypt(b"x", recipients=[passphrase.Passphrase("correct horse")])

    info: shardseal.ContainerInfo = shardseal.inspect(blob)
    print(info.suite, info.metadata, shardseal.inspect(folder / "a.sseal").plaintext_size)

    with shardseal.open(folder / "a.sseal", "wb", key=key, metadata={"n": 1}) as writer:
        writer.write(b"hello")
    reader: shardseal.DecryptingReader = shardseal.open(folder / "a.sseal", "rb", key=key)
    with reader:
        reader.pread(0, 5)
    with shardseal.open(str(folder / "a.sseal"), key=key) as default_mode:
        default_mode.read()

    size: int = shardseal.encrypt_file(folder / "a", folder / "a.sseal", key, progress=True)
    size = shardseal.decrypt_file(folder / "a.sseal", folder / "a", identities=[ring])
    print(size, shardseal.backend)

    message: bytes = shardseal.cobblestone.encrypt(b"data", key, b"context")
    shardseal.cobblestone.decrypt(message, key, b"context")
    report: shardseal.RotationReport = shardseal.rotate([folder], identities=[ring], add=[identity.recipient])
    print(report)
