"""Writes the seed corpus: real files the library writes, one folder per target.

    python -m fuzz.make_corpus        # rewrites fuzz/corpus/<target>/seed-*

Seeds are deterministic in content where the library allows (fixed keys and identities from
``fuzz.targets``; salts and file keys are random, so bytes differ between runs). Files named
``crash-*`` (inputs that once broke a target) are kept as they are.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

import shardseal
from shardseal import keyfile, keyring, manifest, x25519
from shardseal.passphrase import Passphrase

from . import targets

CORPUS = Path(__file__).resolve().parent / "corpus"


def _containers() -> dict[str, bytes]:
    key = targets.KEY
    passphrase = Passphrase(targets.PASSPHRASE, work_factor=targets.PASSPHRASE_WORK_FACTOR)
    data = bytes(range(256)) * 70  # 17,920 bytes: one full chunk and a short one
    seeds = {
        "direct-empty": shardseal.encrypt(b"", key),
        "direct-1": shardseal.encrypt(b"x", key),
        "direct-16384": shardseal.encrypt(bytes(16384), key),
        "direct-17920": shardseal.encrypt(data, key),
        "direct-128-metadata": shardseal.encrypt(b"hello", key, suite=128,
                                                 metadata={"name": "fuzz", "n": [1, 2.5, None, True]}),
        "array": shardseal.encrypt_array(np.arange(12, dtype="<i4").reshape(3, 4), key),
        "array-structured": shardseal.encrypt_array(np.zeros(2, dtype=[("a", "<f4"), ("b", "u1", (2,))]), key),
        "keyring": shardseal.encrypt(b"keyring", recipients=[targets.KEYRING.recipient()]),
        "x25519": shardseal.encrypt(data[:300], recipients=[targets.IDENTITY.recipient]),
        "x25519-keyring": shardseal.encrypt(b"two", recipients=[targets.IDENTITY.recipient,
                                                                targets.KEYRING.recipient()]),
        "passphrase": shardseal.encrypt(b"secret", recipients=[passphrase]),
    }
    try:
        from shardseal import torch as sstorch

        seeds["tensor"] = sstorch.encrypt_tensor(sstorch.torch.arange(6.0).reshape(2, 3), key)
    except ImportError:
        pass
    return seeds


def _reader_seeds(containers: dict[str, bytes]) -> dict[str, bytes]:
    scripts = [bytes([0x38, 0x01 | 31 << 3, 0x02 | 3 << 3, 0x00 | 7 << 3, 0x04 | 9 << 3, 0x05 | 2 << 3,
                      0x06 | 4 << 3, 0x03 | 1 << 3, 0x07, 0x00 | 1 << 3, 0x04 | 30 << 3, 0x00]),
               bytes(range(targets.READER_SCRIPT_SIZE))]
    seeds = {}
    for name, blob in containers.items():
        for number, script in enumerate(scripts):
            seeds[f"{name}-{number}"] = script + blob
    return seeds


def _keyfile_seeds() -> dict[str, bytes]:
    return {
        "keyfile": keyfile.format_key_file(targets.KEY).encode(),
        "raw-32": targets.KEY,
        "crlf": keyfile.format_key_file(targets.KEY).replace("\n", "\r\n").encode(),
    }


def _x25519_seeds() -> dict[str, bytes]:
    identity = targets.IDENTITY
    return {
        "identity-file": x25519.format_identity_file(identity).encode(),
        "identity-string": identity.to_string().encode(),
        "recipient-string": identity.recipient.to_string().encode(),
    }


def _keyring_seeds() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ring.json"
        ring = keyring.Keyring.create(path)
        ring.add("first")
        ring.add("second")
        ring.set_state("first", keyring.DECRYPT_ONLY)
        ring.add("third")
        ring.set_state("third", keyring.DESTROYED)
        ring.save()
        several = path.read_bytes()
    return {"one-key": targets.keyring_text(), "states": several,
            "empty": b'{"format": "%s", "keys": []}' % keyring.FORMAT.encode()}


def _manifest_seeds() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        with manifest.Dataset.create(folder, recipients=[targets.IDENTITY.recipient]) as dataset:
            with dataset.open_shard("shard-0.sseal", "wb") as shard:
                shard.write(b"shard")
            with dataset.open_shard("sub/shard-1.sseal", "wb") as shard:
                shard.write(b"")
        blob = (Path(folder) / manifest.MANIFEST_NAME).read_bytes()
        with manifest.Dataset.create(Path(folder) / "empty", recipients=[targets.KEYRING.recipient()]):
            pass
        empty = (Path(folder) / "empty" / manifest.MANIFEST_NAME).read_bytes()
    plaintext = shardseal.decrypt(blob, identities=[targets.IDENTITY])
    return {"file": b"\x00" + blob, "file-empty": b"\x00" + empty, "plaintext": b"\x01" + plaintext,
            "plaintext-empty": b"\x01" + shardseal.decrypt(empty, identities=[targets.KEYRING])}


def _safetensors_seeds() -> dict[str, bytes]:
    try:
        import torch
        from safetensors.torch import save

        from shardseal import safetensors as sst
    except ImportError:
        return {}
    tensors = {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
               "b": torch.tensor([1, 2, 3], dtype=torch.int64),
               "c": torch.zeros((0, 2), dtype=torch.bfloat16),
               "d": torch.tensor(7, dtype=torch.uint8)}
    plain = save(tensors, metadata={"format": "pt"})
    out = io.BytesIO()
    sst.save_file(tensors, out, targets.KEY, metadata={"format": "pt"})
    blob = out.getvalue()
    return {"container-pt": b"\x00" + blob, "container-numpy": b"\x01" + blob,
            "plaintext-pt": b"\x02" + plain, "plaintext-numpy": b"\x03" + plain}


def seeds() -> dict[str, dict[str, bytes]]:
    """Every target's seeds: {target: {name: bytes}}."""
    containers = _containers()
    return {
        "inspect": containers,
        "decrypt": containers,
        "reader": _reader_seeds(containers),
        "keyfile": _keyfile_seeds(),
        "x25519": _x25519_seeds(),
        "keyring": _keyring_seeds(),
        "manifest": _manifest_seeds(),
        "safetensors": _safetensors_seeds(),
    }


def main() -> None:
    for target, files in seeds().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for name, data in files.items():
            (folder / f"seed-{name}").write_bytes(data)
        print(f"{target}: {len(files)} seeds")


if __name__ == "__main__":
    main()
