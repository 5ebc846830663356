"""No error the public API or the command line raises for a bad argument holds key material.

A key handed to the wrong parameter (``open(path, key)``, ``encrypt(data, key, suite=key)``),
a key pasted where the command line wants a path (``-k``, ``-i``, ``-r``, an INPUT after
``-p``) or a key file with one bad byte must never come back in a message, a ``repr``, an
exception's args or attributes (``UnicodeDecodeError.object``), a chained exception
(``__cause__``, ``__context__``) or the command's output. Each case below is scanned for the
key in every encoding: raw bytes, hex (both cases), base64 (standard and URL-safe, with and
without padding), ``repr``, the key file line, and for any 8-byte piece of the key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import traceback

import pytest

import shardseal
from shardseal import cli, cobblestone, keyfile, keyref, passphrase, x25519
import shardseal.keyring
from shardseal.keys import registry

from .cli_helpers import child_env, command, register_secret

import subprocess

KEY = hashlib.sha256(b"shardseal leak scan key").digest()
register_secret(KEY)
B64 = base64.b64encode(KEY).decode()
HEX = KEY.hex()
KEY_LINE = keyfile.KEY_LINE_PREFIX + B64
# The key in every form a caller might pass it in.
KEY_FORMS = [KEY, bytearray(KEY), memoryview(KEY), B64, HEX, KEY_LINE, KEY.decode("latin-1")]


def _encodings(piece: bytes) -> list[bytes]:
    b64 = base64.b64encode(piece)
    urlsafe = base64.urlsafe_b64encode(piece)
    return [piece, piece.hex().encode(), piece.hex().upper().encode(), b64, b64.rstrip(b"="),
            urlsafe, urlsafe.rstrip(b"="), repr(piece)[2:-1].encode(), piece.decode("latin-1").encode()]


# The whole key in every encoding, and every 8-byte piece of it raw, in hex and in repr (the
# repr of a shortened key, "b'\x13Y\xde...'", is a leak too).
NEEDLES = sorted(set(_encodings(KEY) + [KEY[i:i + 8] for i in range(0, 25)]
                     + [KEY[i:i + 8].hex().encode() for i in range(0, 25)]
                     + [repr(KEY[i:i + 8])[2:-1].encode() for i in range(0, 25)]))


def _texts(value, seen: set) -> list[bytes]:
    """Every byte string and text reachable from an exception: its chain, args and attributes."""
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [bytes(value)]
    if isinstance(value, str):
        return [value.encode("utf-8", "surrogateescape"), value.encode("latin-1", "replace")]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _texts(item, seen)]
    if isinstance(value, BaseException):
        found = _texts(str(value), seen) + _texts(repr(value), seen) + _texts(value.args, seen)
        for name in ("object", "doc", "filename", "filename2", "strerror", "msg"):
            found += _texts(getattr(value, name, None), seen)
        found += _texts(list(vars(value).values()), seen)
        found += _texts(value.__cause__, seen) + _texts(value.__context__, seen)
        return found
    return []


def assert_no_key_in(*outputs: bytes) -> None:
    for output in outputs:
        for needle in NEEDLES:
            assert needle not in output, f"key material ({needle!r}) in {output[:300]!r}"


def assert_no_key_in_error(exc: BaseException) -> None:
    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert_no_key_in(formatted.encode("utf-8", "surrogateescape"), *_texts(exc, set()))


def raised_by(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("leak")
    blob = shardseal.encrypt(b"secret data", KEY)
    (folder / "x.sseal").write_bytes(blob)
    (folder / "plain.txt").write_bytes(b"plain")
    keyfile.write_key_file(folder / "key.key", KEY)
    return folder, blob


def _api_calls(folder, blob):
    """(label, call) for every public function and parameter that takes keys or options."""
    path = str(folder / "x.sseal")
    plain = str(folder / "plain.txt")
    out = str(folder / "out.sseal")
    calls = []
    for k in KEY_FORMS:
        calls += [
            ("open mode", lambda k=k: shardseal.open(path, k)),
            ("open key", lambda k=k: shardseal.open(path, "rb", k)),
            ("open identities", lambda k=k: shardseal.open(path, "rb", identities=k)),
            ("open identities list", lambda k=k: shardseal.open(path, "rb", identities=[k])),
            ("open threads", lambda k=k: shardseal.open(path, "rb", KEY, threads=k)),
            ("open cache_chunks", lambda k=k: shardseal.open(path, "rb", KEY, cache_chunks=k)),
            ("open wb suite", lambda k=k: shardseal.open(out, "wb", KEY, suite=k)),
            ("open wb metadata", lambda k=k: shardseal.open(out, "wb", KEY, metadata=k)),
            ("open wb recipients", lambda k=k: shardseal.open(out, "wb", recipients=k)),
            ("open wb recipients list", lambda k=k: shardseal.open(out, "wb", recipients=[k])),
            ("encrypt key", lambda k=k: shardseal.encrypt(b"x", k)),
            ("encrypt suite", lambda k=k: shardseal.encrypt(b"x", KEY, suite=k)),
            ("encrypt threads", lambda k=k: shardseal.encrypt(b"x", KEY, threads=k)),
            ("encrypt metadata", lambda k=k: shardseal.encrypt(b"x", KEY, metadata=k)),
            ("encrypt metadata value", lambda k=k: shardseal.encrypt(b"x", KEY, metadata={"a": k})),
            ("encrypt recipients", lambda k=k: shardseal.encrypt(b"x", recipients=k)),
            ("encrypt recipients list", lambda k=k: shardseal.encrypt(b"x", recipients=[k])),
            ("encrypt both", lambda k=k: shardseal.encrypt(b"x", KEY, recipients=[k])),
            ("encrypt_into out", lambda k=k: shardseal.encrypt_into(b"x", KEY, k)),
            ("encrypt_array suite", lambda k=k: shardseal.encrypt_array([1], KEY, suite=k)),
            ("encrypted_size", lambda k=k: shardseal.encrypted_size(k)),
            ("encrypted_size suite", lambda k=k: shardseal.encrypted_size(1, suite=k)),
            ("encrypted_size metadata", lambda k=k: shardseal.encrypted_size(1, metadata=k)),
            ("encrypted_size recipients", lambda k=k: shardseal.encrypted_size(1, recipients=[k])),
            ("decrypt key", lambda k=k: shardseal.decrypt(blob, k)),
            ("decrypt identities", lambda k=k: shardseal.decrypt(blob, identities=k)),
            ("decrypt identities list", lambda k=k: shardseal.decrypt(blob, identities=[k])),
            ("decrypt threads", lambda k=k: shardseal.decrypt(blob, KEY, threads=k)),
            ("decrypt blob", lambda k=k: shardseal.decrypt(k, KEY)),
            ("decrypt_into out", lambda k=k: shardseal.decrypt_into(blob, KEY, k)),
            ("decrypt_array", lambda k=k: shardseal.decrypt_array(blob, k)),
            ("decrypted_size", lambda k=k: shardseal.decrypted_size(k)),
            ("inspect", lambda k=k: shardseal.inspect(k)),
            ("encrypt_file key", lambda k=k: shardseal.encrypt_file(plain, out, k)),
            ("encrypt_file suite", lambda k=k: shardseal.encrypt_file(plain, out, KEY, suite=k)),
            ("encrypt_file metadata", lambda k=k: shardseal.encrypt_file(plain, out, KEY, metadata=k)),
            ("encrypt_file threads", lambda k=k: shardseal.encrypt_file(plain, out, KEY, threads=k)),
            ("decrypt_file identities", lambda k=k: shardseal.decrypt_file(path, out, identities=[k])),
            ("decrypt_file key", lambda k=k: shardseal.decrypt_file(path, out, k)),
            ("cobblestone suite", lambda k=k: cobblestone.encrypt(b"x", KEY, suite=k)),
            ("cobblestone key", lambda k=k: cobblestone.encrypt(b"x", k, suite=128)),
            ("passphrase work_factor", lambda k=k: passphrase.Passphrase("pw", work_factor=k)),
            ("x25519 recipient string", lambda k=k: x25519.X25519Recipient.from_string(k)),
            ("x25519 identity string", lambda k=k: x25519.X25519Identity.from_string(k)),
            ("keyref RawKey", lambda k=k: keyref.RawKey(k[:31])),
            ("keyfile format", lambda k=k: keyfile.format_key_file(k[:31])),
            # Issue 12: the one registry, references and their string forms.
            ("registry parse_identity", lambda k=k: registry.parse_identity(k)),
            ("registry parse_recipient", lambda k=k: registry.parse_recipient(k)),
            ("registry keyring identity", lambda k=k: registry.parse_identity(f"keyring:{k}")),
            ("registry keyring recipient", lambda k=k: registry.parse_recipient(f"keyring:{k}#x")),
            ("registry aws-kms identity", lambda k=k: registry.parse_identity(f"aws-kms:{k}")),
            ("IdentityRef", lambda k=k: keyref.IdentityRef(k).load()),
            ("parse_key_ref", lambda k=k: keyref.parse_key_ref(k)),
            ("KeyFile from_string", lambda k=k: keyref.KeyFile.from_string(f"keyfile:{k}").resolve()),
            ("EnvKey from_string", lambda k=k: keyref.EnvKey.from_string(f"env:{k}")),
            ("DatasetKey identity", lambda k=k: keyref.DatasetKey(folder, k).resolve()),
            ("SealFileSystem identities", lambda k=k: _sealfs(identities=[k]).cat(path)),
            ("SealFileSystem key string", lambda k=k: _sealfs(key=k)),
            ("open identities string", lambda k=k: shardseal.open(path, "rb", identities=[k])),
        ]
    line = KEY_LINE.encode()
    calls += [
        ("parse_key_file NUL", lambda: keyfile.parse_key_file(KEY + b"\x00")),
        ("parse_key_file bad byte", lambda: keyfile.parse_key_file(line + b"\xff")),
        ("parse_key_file non-ASCII", lambda: keyfile.parse_key_file(line[:-1] + "é".encode())),
        ("parse_key_file short", lambda: keyfile.parse_key_file(line[:-4])),
        ("parse_key_file two", lambda: keyfile.parse_key_file(line + b"\n" + line)),
        ("parse_key_file text", lambda: keyfile.parse_key_file(B64.encode() + b"\n")),
        ("parse_identity_file bad byte",
         lambda: x25519.parse_identity_file(x25519.IDENTITY_PREFIX.encode() + line + b"\xff")),
        ("passphrase surrogate", lambda: passphrase.Passphrase(B64 + "\ud800")),
        ("rotate identities", lambda: shardseal.rotate(path, identities=[KEY[:31]], dry_run=True)),
        # A key where a path belongs: the FileNotFoundError must not name it.
        ("read_key_file bytes", lambda: keyfile.read_key_file(KEY.replace(b"\x00", b"\x01"))),
        ("read_key_file hex", lambda: keyfile.read_key_file(HEX)),
        ("read_key_file b64", lambda: keyfile.read_key_file(B64)),
        ("KeyFile resolve hex", lambda: keyref.KeyFile(HEX).resolve()),
        ("encrypt_file src hex", lambda: shardseal.encrypt_file(HEX, out, KEY)),
        ("encrypt_file src b64", lambda: shardseal.encrypt_file(B64, out, KEY)),
        ("encrypt_file dst hex", lambda: shardseal.encrypt_file(plain, "/nonexistent/" + HEX, KEY)),
        ("decrypt_file src hex", lambda: shardseal.decrypt_file(HEX, out, KEY)),
        ("open rb hex", lambda: shardseal.open(HEX, "rb", KEY)),
        ("open wb hex", lambda: shardseal.open("/nonexistent/" + HEX, "wb", KEY)),
        ("Keyring create", lambda: shardseal.keyring.Keyring.create("/x/" + HEX)),
        ("Keyring load", lambda: shardseal.keyring.Keyring.load(B64)),
        ("write_key_file", lambda: keyfile.write_key_file("/x/" + HEX, KEY)),
        ("clean_temp_files hex", lambda: shardseal.clean_temp_files(HEX)),
        ("rotate add", lambda: shardseal.rotate(path, identities=[], add=[KEY], dry_run=True)),
        ("RawKey to_string", lambda: keyref.RawKey(KEY).to_string()),
        ("SealFileSystem raw key to_json", lambda: _sealfs(key=KEY).to_json()),
        ("SealFileSystem RawKey to_json", lambda: _sealfs(key=keyref.RawKey(KEY, allow_pickle=True)).to_json()),
        ("SealFileSystem identity to_json",
         lambda: _sealfs(identities=[shardseal.keys.envelope.DirectKey(KEY)]).to_json()),
    ]
    return calls


def _sealfs(**kwargs):
    pytest.importorskip("fsspec")
    from shardseal.fsspec import SealFileSystem

    return SealFileSystem(target_protocol="file", **kwargs)


def test_no_api_error_holds_the_key(files):
    folder, blob = files
    checked = 0
    for label, call in _api_calls(folder, blob):
        try:
            call()
        except Exception as exc:  # every error, whatever its class, is scanned
            try:
                assert_no_key_in_error(exc)
            except AssertionError as failure:
                raise AssertionError(f"{label}: {type(exc).__name__}: {failure}") from None
            checked += 1
    assert checked > 300


def test_key_shaped_missing_paths_raise_file_not_found_without_the_name(files):
    folder, _ = files
    for call in (lambda: keyfile.read_key_file(HEX), lambda: keyref.KeyFile(B64).resolve(),
                 lambda: shardseal.encrypt_file(HEX, str(folder / "o.sseal"), KEY),
                 lambda: shardseal.keyring.Keyring.create("/x/" + HEX),
                 lambda: shardseal.clean_temp_files(HEX)):
        exc = raised_by(call)
        assert isinstance(exc, FileNotFoundError)
        assert "not shown in case it is a key" in exc.filename
        assert exc.__context__ is None and exc.__cause__ is None
    # An ordinary missing path is still named.
    exc = raised_by(lambda: keyfile.read_key_file(str(folder / "missing.key")))
    assert isinstance(exc, FileNotFoundError) and exc.filename.endswith("missing.key")


def test_key_file_error_has_no_context_holding_the_file():
    # The reproducer: from None hid the UnicodeDecodeError, but kept it as __context__.
    exc = raised_by(lambda: keyfile.parse_key_file(KEY + b"\x00"))
    assert isinstance(exc, keyfile.KeyFileError)
    assert exc.__context__ is None and exc.__cause__ is None


def test_mode_error_shows_type_and_length(files):
    folder, _ = files
    exc = raised_by(lambda: shardseal.open(str(folder / "x.sseal"), KEY))
    assert isinstance(exc, ValueError) and "bytes of length 32" in str(exc)
    exc = raised_by(lambda: shardseal.encrypt(b"x", KEY, suite=KEY))
    assert isinstance(exc, ValueError) and "bytes of length 32" in str(exc)


def _cli_cases(folder):
    x = str(folder / "x.sseal")
    plain = str(folder / "plain.txt")
    key = str(folder / "key.key")
    cases = []
    for secret in (B64, HEX, KEY_LINE, base64.urlsafe_b64encode(KEY).decode().rstrip("=")):
        cases += [
            ["decrypt", "-k", secret, x],
            ["decrypt", f"--key-file={secret}", x],
            ["encrypt", "-k", secret, plain, "-o", "-"],
            ["decrypt", "-i", secret, x],
            ["decrypt", "-k", key, "-i", secret, x],
            ["encrypt", "-r", secret, plain],
            ["encrypt", "-r", f"keyring:{secret}", plain],
            ["encrypt", "-r", f"aws-kms:{secret}\x00", plain],
            ["decrypt", "-p", secret, x],
            ["decrypt", "--passphrase-fd", secret, x],
            ["encrypt", "-k", key, "--threads", secret, plain],
            ["encrypt", "-k", key, "--suite", secret, plain],
            ["encrypt", "-k", key, "--metadata", secret, plain],
            ["encrypt", "-k", key, "--work-factor", secret, plain],
            ["inspect", secret],
            ["keyring", secret, "keys.json"],
            ["keyring", "list", secret],
            ["rotate", "-i", secret, x],
            ["rotate", "-k", key, "--add", secret, x],
            ["verify", "-k", secret, str(folder)],
            [secret],
            ["decrypt", "-k", key, x, secret],
        ]
    return cases


def test_no_cli_output_holds_the_key(files, monkeypatch, capsys):
    folder, _ = files
    monkeypatch.chdir(folder)
    monkeypatch.setenv("SHARDSEAL_DEBUG", "1")  # the traceback (and its chain) is scanned too
    monkeypatch.delenv("SHARDSEAL_KEY_FILE", raising=False)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    for argv in _cli_cases(folder):
        status = None
        with contextlib.suppress(SystemExit):
            status = cli.main(argv)
        captured = capsys.readouterr()
        output = (captured.out + captured.err).encode("utf-8", "surrogateescape")
        try:
            assert_no_key_in(output)
        except AssertionError as failure:
            raise AssertionError(f"shardseal {argv!r}: {failure}") from None
        assert status != 0, argv


def test_cli_reproducers_in_a_subprocess(files):
    # As reported: the key pasted after -k was printed back by "cannot read key file <key>",
    # and a mistyped -i string was echoed in full.
    folder, _ = files
    for args in (["decrypt", "-k", B64, "x.sseal"], ["decrypt", "-i", B64 + "x", "x.sseal"],
                 ["encrypt", "-r", HEX, "plain.txt"]):
        result = subprocess.run(command(*args), cwd=folder, capture_output=True, env=child_env(),
                                timeout=120)
        assert result.returncode in (1, 2), result.stderr
        assert_no_key_in(result.stdout, result.stderr)
        assert b"not shown in case it is a key" in result.stderr or b"hidden" in result.stderr
