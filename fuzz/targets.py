"""Fuzz targets: each takes one input (bytes) and drives one public entry point with it.

The contract every target checks: the library either succeeds or raises one of the exception
classes its documentation lists for that entry point (README "Errors", the docstrings'
``Raises:``). Anything else propagates out of the target and is a finding. The fuzzer also
treats an input that runs longer than its per-input timeout as a finding (a hang).

The keys, identities and passphrase are fixed, so that the seed corpus written by
``make_corpus.py`` holds real files these targets can open.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import io
import os
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import shardseal
from shardseal import keyfile, keyring, manifest, x25519
from shardseal.errors import ShardsealError
from shardseal.container import blob as container_blob
from shardseal.core import backend
from shardseal.passphrase import Passphrase

# Fixed secrets: fuzzing needs files it can open, not secrecy.
KEY = bytes(range(32))
KEK = bytes(range(100, 132))
X25519_PRIVATE = bytes(range(200, 232))
PASSPHRASE = "fuzz passphrase"
PASSPHRASE_WORK_FACTOR = 10  # scrypt's minimum: about a millisecond per unwrap

IDENTITY = x25519.X25519Identity(X25519_PRIVATE)
PASSPHRASE_IDENTITY = Passphrase(PASSPHRASE, work_factor=PASSPHRASE_WORK_FACTOR)

_SCRATCH = Path(tempfile.mkdtemp(prefix="shardseal-fuzz-",
                                 dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


class Finding(AssertionError):
    """A target broke its contract without raising (wrong bytes returned, a leaked secret)."""


def keyring_text(kek: bytes = KEK) -> bytes:
    """A keyring file holding kek as its one active key (the format of docs/KEYS.md)."""
    return ((
        '{\n  "format": "%s",\n  "keys": [\n    {\n      "id": "%s",\n      "name": "fuzz",\n'
        '      "created": "2026-01-01T00:00:00Z",\n      "state": "active",\n      "key": "%s"\n'
        "    }\n  ]\n}\n"
    ) % (keyring.FORMAT, keyring.kek_id(kek).hex(), base64.b64encode(kek).decode("ascii"))
    ).encode()


def _load_keyring(data: bytes) -> keyring.Keyring:
    path = _SCRATCH / "keyring.json"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return keyring.Keyring.load(path)


KEYRING = _load_keyring(keyring_text())

# Every form a secret may take in text: hex, base64, escaped raw bytes, the identity string.
_SECRET_FORMS = tuple(
    form
    for secret in (KEY, KEK, X25519_PRIVATE, PASSPHRASE.encode())
    for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1])
) + (IDENTITY.to_string(), PASSPHRASE)


def _chain(exc: BaseException):
    """exc and every exception in its __cause__ / __context__ chain (a traceback shows them)."""
    seen = []
    while exc is not None and not any(exc is other for other in seen):
        seen.append(exc)
        yield exc
        exc = exc.__cause__ or exc.__context__


def _check_message(exc: BaseException) -> None:
    """No error, nor one chained to it, may quote a secret (hex, base64 or raw bytes).

    Raw bytes are looked for in the chained exceptions' ``object`` too: a
    UnicodeDecodeError left as ``__context__`` holds the whole input it failed on.
    """
    for link in _chain(exc):
        text = f"{link!s} {link!r} {getattr(link, 'object', '')!r}"
        if any(form in text for form in _SECRET_FORMS):
            raise Finding(f"{type(exc).__name__} (or its chained {type(link).__name__}) "
                          "holds a secret") from None


@contextmanager
def documented(*classes: type):
    """Lets the documented exception classes through (after checking their messages)."""
    try:
        yield
    except classes as exc:
        _check_message(exc)


def _same(got: bytes, want: bytes, what: str) -> None:
    if got != want:
        raise Finding(f"{what}: {len(got)} bytes differ from decrypt()'s {len(want)}")


# ----------------------------------------------------------------------------------------
# Targets


def target_inspect(data: bytes) -> None:
    """Header parsing: ``shardseal.inspect`` and ``decrypted_size`` of arbitrary bytes."""
    with documented(ShardsealError):
        info = shardseal.inspect(data)
        repr(info)
    with documented(ShardsealError):
        shardseal.decrypted_size(data)


def _decrypt_all_ways(data: bytes) -> list:
    results = []
    for kwargs in ({"key": KEY}, {"identities": [KEYRING]}, {"identities": [IDENTITY]},
                   {"identities": [PASSPHRASE_IDENTITY]}):
        with documented(ShardsealError):
            results.append(shardseal.decrypt(data, threads=1, **kwargs))
    return results


def target_decrypt(data: bytes) -> None:
    """``shardseal.decrypt`` with a direct key and with each kind of local identity."""
    results = _decrypt_all_ways(data)
    for other in results[1:]:
        _same(other, results[0], "two keys opened one container")


# Reader operations: one byte each; low 3 bits pick the call, the rest the position/size.
_SIZES = (0, 1, 7, 16383, 16384, 16385, 40000, -1)


def _reader_ops(reader, script: bytes, plain) -> None:
    size = reader.size
    for byte in script:
        op, arg = byte & 7, byte >> 3
        position = (arg * (size or 0)) // 31 if size is not None else arg
        count = _SIZES[arg & 7]
        with documented(ShardsealError):
            if op == 0:
                start = reader.tell()
                got = reader.read(count)
                if plain is not None:
                    _same(got, plain[start:start + (len(plain) if count < 0 else count)], "read")
            elif op == 1:
                reader.seek(position)
            elif op == 2:
                reader.seek(-min(arg, size or 0), io.SEEK_END)
            elif op == 3:
                reader.seek(arg, io.SEEK_CUR)
            elif op == 4:
                got = reader.pread(position, max(count, 0))
                if plain is not None:
                    _same(got, plain[position:position + max(count, 0)], "pread")
            elif op == 5:
                buffer = bytearray(max(count, 0))
                n = reader.preadinto(position, buffer)
                if plain is not None:
                    _same(bytes(buffer[:n]), plain[position:position + len(buffer)], "preadinto")
            elif op == 6:
                start = reader.tell()
                buffer = bytearray(max(count, 0))
                n = reader.readinto(buffer)
                if plain is not None:
                    _same(bytes(buffer[:n]), plain[start:start + len(buffer)], "readinto")
            else:
                reader.read1(count)


READER_SCRIPT_SIZE = 12


def target_reader(data: bytes) -> None:
    """The random-access reader: ``shardseal.open(BytesIO, "rb")``, then reads, seeks, pread.

    The first READER_SCRIPT_SIZE bytes are the operations; the rest is the container. Where
    ``decrypt`` opens the same container, every read must return decrypt's bytes.
    """
    script, blob = data[:READER_SCRIPT_SIZE], data[READER_SCRIPT_SIZE:]
    plain = None
    with documented(ShardsealError):
        plain = shardseal.decrypt(blob, KEY, identities=[IDENTITY], threads=1)
    with documented(ShardsealError):
        with shardseal.open(io.BytesIO(blob), "rb", key=KEY, identities=[IDENTITY], threads=1,
                            cache_chunks=2) as reader:
            _reader_ops(reader, script, plain)


def target_keyfile(data: bytes) -> None:
    """Key files: ``keyfile.parse_key_file``; a key it returns must round-trip."""
    with documented(keyfile.KeyFileError):
        key = keyfile.parse_key_file(data)
        if keyfile.parse_key_file(keyfile.format_key_file(key).encode()) != key:
            raise Finding("a parsed key does not round-trip through format_key_file")


def target_x25519(data: bytes) -> None:
    """X25519 identity files and identity/recipient strings."""
    with documented(keyfile.KeyFileError):
        identity = x25519.parse_identity_file(data)
        if x25519.X25519Identity.from_string(identity.to_string()).key_id != identity.key_id:
            raise Finding("an identity does not round-trip through its string")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    # Recipient and identity strings: ValueError is their documented error for a bad string.
    with documented(ValueError):
        recipient = x25519.X25519Recipient.from_string(text)
        if x25519.X25519Recipient.from_string(recipient.to_string()) != recipient:
            raise Finding("a recipient does not round-trip through its string")
    with documented(ValueError):
        x25519.X25519Identity.from_string(text)


def target_keyring(data: bytes) -> None:
    """Keyring files: ``Keyring.load``, then use the keys it holds on a container."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with documented(keyring.KeyringFileError):
            ring = _load_keyring(data)
            with documented(ShardsealError):
                shardseal.decrypt(_KEYRING_BLOB, identities=[ring], threads=1)
            repr(ring)
            ring.keys


_KEYRING_BLOB = shardseal.encrypt(b"keyring target", recipients=[KEYRING.recipient()])


def _manifest_container(plaintext: bytes) -> bytes:
    """A manifest file around the fuzzer's plaintext, written as docs/FORMAT.md says a manifest
    is: a container for the dataset's recipients whose header metadata names its content type.

    Built from the container layer's interface (plan_header, the backend's seal), not by
    patching the manifest writer, so the parser sees exactly what any writer could produce.
    """
    plan = container_blob.plan_header(None, [IDENTITY.recipient], manifest.MANIFEST_SUITE,
                                      container_blob.header_metadata(None, {"content_type": manifest.CONTENT_TYPE}))
    return backend.impl.seal(manifest.MANIFEST_SUITE, plan.input_key, container_blob.random_salt(), plan.fixed,
                             plaintext, 1, plan.header)


def _fresh_dataset_folder() -> Path:
    folder = _SCRATCH / "dataset"
    if folder.exists():
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        folder.rmdir()
    return folder


def target_manifest(data: bytes) -> None:
    """Dataset manifests: ``Dataset.open`` and ``verify``.

    The first byte picks the form of the rest: even, the manifest file's bytes; odd, the
    manifest's plaintext, which the real writer then encrypts (so the parser sees it).
    """
    if not data:
        return
    folder = _fresh_dataset_folder()
    folder.mkdir()
    manifest_bytes = _manifest_container(data[1:]) if data[0] & 1 else data[1:]
    (folder / manifest.MANIFEST_NAME).write_bytes(manifest_bytes)
    (folder / "shard-0.sseal").write_bytes(_SHARD)
    with documented(ShardsealError):
        report = manifest.verify(folder, identities=[IDENTITY, KEYRING], deep=True, threads=1)
        report.summary()


_SHARD = shardseal.encrypt(b"shard", KEY)


SAFETENSORS_KEYS = ("a", "b", "c", "missing")


def target_safetensors(data: bytes) -> None:
    """``shardseal.safetensors.safe_open`` with get_tensor and get_slice, and ``load_file``.

    The first byte picks the framework (bit 0: numpy or torch) and whether the rest is the
    container's bytes (bit 1 clear) or the safetensors plaintext, which is encrypted first.
    """
    from shardseal import safetensors as sst

    if not data:
        return
    framework = "numpy" if data[0] & 1 else "pt"
    blob = data[1:] if not data[0] & 2 else shardseal.encrypt(data[1:], KEY, threads=1)
    # KeyError: no such tensor; IndexError: a slice index past the end (both documented, as in
    # safetensors); ValueError: numpy has no such dtype (bfloat16, float8), as the docs say.
    allowed = (ShardsealError, KeyError, IndexError) + ((ValueError,) if framework == "numpy" else ())
    with documented(*allowed):
        with sst.safe_open(io.BytesIO(blob), KEY, framework=framework, threads=1) as f:
            f.metadata()
            f.offset_keys()
            for name in list(f.keys())[:8] + ["missing"]:
                with documented(*allowed):
                    f.get_tensor(name)
                with documented(*allowed):
                    piece = f.get_slice(name)
                    piece.get_shape()
                    piece.get_dtype()
                    if piece.get_shape():
                        piece[0:2]
                        piece[-1]
    if framework == "pt":
        with documented(ShardsealError):
            sst.load_file(io.BytesIO(blob), KEY, threads=1)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "inspect": target_inspect,
    "decrypt": target_decrypt,
    "reader": target_reader,
    "keyfile": target_keyfile,
    "x25519": target_x25519,
    "keyring": target_keyring,
    "manifest": target_manifest,
    "safetensors": target_safetensors,
}


# ----------------------------------------------------------------------------------------
# Known defects: findings that are filed and being fixed elsewhere. By default a run
# tolerates them (and counts them), so that CI stays green until the fix is merged; delete
# an entry once its fix lands (tests/test_fuzz.py has an xfail regression test for each).
# ``python -m fuzz TARGET --strict`` tolerates none.

KNOWN_DEFECTS: tuple[tuple[str, type, str, str], ...] = (
    # (target, exception class, text in the message, defect): none open. The inputs of the
    # issue 10 defects this list held (#1 UnicodeDecodeError context, #5 RecursionError and
    # safetensors RuntimeErrors) are regression seeds in corpus/ now.
)


def known_defect(target: str, exc: BaseException):
    """The defect description when exc is a known, filed defect of target, else None."""
    for name, cls, text, defect in KNOWN_DEFECTS:
        if name == target and isinstance(exc, cls) and text in str(exc):
            return defect
    return None


_KNOWN_SEEN: set = set()


def run(target: str, data: bytes, *, strict: bool = False) -> None:
    """Runs one input through target; raises on a finding (known defects pass unless strict).

    The first input to hit each known defect is reported on stderr with its SHA-256 prefix
    and written to $SHARDSEAL_FUZZ_KNOWN_DIR (when set), so long runs show what they met.
    """
    try:
        TARGETS[target](data)
    except Exception as exc:
        defect = None if strict else known_defect(target, exc)
        if defect is None:
            raise
        if defect not in _KNOWN_SEEN:
            _KNOWN_SEEN.add(defect)
            _note_known(target, data, exc, defect)


def _note_known(target: str, data: bytes, exc: BaseException, defect: str) -> None:
    digest = hashlib.sha256(data).hexdigest()[:16]
    print(f"\nfuzz: {target}: known defect hit, tolerated: {defect}: {type(exc).__name__} "
          f"(input known-{digest})", file=sys.stderr, flush=True)
    folder = os.environ.get("SHARDSEAL_FUZZ_KNOWN_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"known-{target}-{digest}").write_bytes(data)
