"""Key stanza bodies: the byte layout of every stanza type, parsed without any key.

docs/FORMAT.md section 2.4-2.12 is the specification. This module only encodes and validates
bodies and names the key a stanza needs; the cryptography lives in the recipient modules
(``keyring``, ``passphrase``, ``x25519``, ``pkcs11``, ``kms``) and ``direct``.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Callable, Sequence

from ._pkcs11uri import parse_uri
from ..errors import FormatError

# A set high bit marks a critical type: a reader that does not know it must refuse the file
# instead of skipping the stanza.
STANZA_CRITICAL = 0x8000
# How many stanzas one header may hold (docs/FORMAT.md), and so how many recipients a file has.
MAX_STANZAS = 1024

# Stanza type numbers (bit 15, 0x8000, is the critical bit; none of these set it).
DIRECT = 0x0001
KEYRING = 0x0002
PASSPHRASE = 0x0003
X25519 = 0x0004
PKCS11 = 0x0005
KMS = 0x0006
PADDING = 0x00FF

KEY_ID_SIZE = 16
FILE_KEY_SIZE = 32
AES_KW_SIZE = FILE_KEY_SIZE + 8  # RFC 3394 output for a 32-byte key
SEALED_KEY_SIZE = FILE_KEY_SIZE + 16  # AES-256-GCM ciphertext || tag
MAX_REFERENCE_SIZE = 1024  # a PKCS#11 or KMS key reference
MAX_WRAPPED_SIZE = 8192  # a PKCS#11 or KMS wrapped key
MAX_PADDING_SIZE = 64 * 1024
PKCS11_PROVIDER = "pkcs11"
# A KMS provider name is the prefix of "<provider>:<key reference>" strings, so no colon.
KMS_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

# scrypt parameters a reader accepts: bounded so that a hostile file cannot demand
# unbounded work or memory (2^22 * 128 * 8 bytes = 4 GiB is already the upper edge).
SCRYPT_MIN_LOG2_N, SCRYPT_MAX_LOG2_N = 10, 22
SCRYPT_MAX_R, SCRYPT_MAX_P = 32, 16
# Within those field bounds, no more memory (128 * r * N bytes) or work (N * r * p) than the
# largest stanza a writer makes (log2(N) = 22, r = 8, p = 1): r = 32 or p = 16 at log2(N) = 22
# would otherwise let a hostile file demand 16 GiB of memory or 16 times the work.
SCRYPT_MAX_MEMORY = 128 * 8 * 2**SCRYPT_MAX_LOG2_N  # 4 GiB
SCRYPT_MAX_COST = 8 * 1 * 2**SCRYPT_MAX_LOG2_N  # N * r * p
PASSPHRASE_SALT_SIZE = 16
PASSPHRASE_CHECKSUM_SIZE = 8
_PASSPHRASE_HEAD = struct.Struct(">16sBBB")  # salt, log2(N), r, p
_PASSPHRASE_CHECKSUM_INFO = b"shardseal/v1/passphrase-stanza-checksum"


@dataclass(frozen=True)
class PassphraseBody:
    salt: bytes
    log2_n: int
    r: int
    p: int
    sealed_key: bytes


@dataclass(frozen=True)
class ReferenceBody:
    """A PKCS#11 or KMS stanza: which key (and, for KMS, which provider) wrapped the file key."""

    provider: str
    key_ref: str
    wrapped_key: bytes


def _require_size(name: str, body: bytes, size: int) -> None:
    if len(body) != size:
        raise FormatError(f"{name} key stanza must have a {size}-byte body, found {len(body)}")


# -- direct, keyring, x25519: fixed-size bodies -------------------------------------------

def keyring_body(kek_id: bytes, wrapped_key: bytes) -> bytes:
    return _check_fixed_parts("keyring", (kek_id, KEY_ID_SIZE), (wrapped_key, AES_KW_SIZE))


def parse_keyring(body: bytes) -> tuple[bytes, bytes]:
    """(KEK id, RFC 3394 wrapped file key)."""
    _require_size("keyring", body, KEY_ID_SIZE + AES_KW_SIZE)
    return body[:KEY_ID_SIZE], body[KEY_ID_SIZE:]


def x25519_body(recipient_id: bytes, ephemeral_public: bytes, sealed_key: bytes) -> bytes:
    return _check_fixed_parts("x25519", (recipient_id, KEY_ID_SIZE), (ephemeral_public, 32),
                              (sealed_key, SEALED_KEY_SIZE))


def parse_x25519(body: bytes) -> tuple[bytes, bytes, bytes]:
    """(recipient id, ephemeral public key, sealed file key)."""
    _require_size("x25519", body, KEY_ID_SIZE + 32 + SEALED_KEY_SIZE)
    return body[:KEY_ID_SIZE], body[KEY_ID_SIZE:KEY_ID_SIZE + 32], body[KEY_ID_SIZE + 32:]


def _check_fixed_parts(name: str, *parts: tuple[bytes, int]) -> bytes:
    for value, size in parts:
        if len(value) != size:
            raise ValueError(f"{name} stanza field must be {size} bytes, got {len(value)}")
    return b"".join(bytes(value) for value, _ in parts)


# -- passphrase: scrypt parameters and a checksum against accidental corruption -----------

def passphrase_body(salt: bytes, log2_n: int, r: int, p: int, sealed_key: bytes) -> bytes:
    check_scrypt_parameters(log2_n, r, p, ValueError)
    head = _PASSPHRASE_HEAD.pack(salt, log2_n, r, p) + _check_fixed_parts(
        "passphrase", (sealed_key, SEALED_KEY_SIZE))
    return head + _passphrase_checksum(head)


def parse_passphrase(body: bytes) -> PassphraseBody:
    """The stanza's fields. A checksum mismatch is a FormatError: the stanza was corrupted,
    which is told apart from a wrong passphrase (a failed unseal)."""
    _require_size("passphrase", body, _PASSPHRASE_HEAD.size + SEALED_KEY_SIZE + PASSPHRASE_CHECKSUM_SIZE)
    head, checksum = body[:-PASSPHRASE_CHECKSUM_SIZE], body[-PASSPHRASE_CHECKSUM_SIZE:]
    if _passphrase_checksum(head) != checksum:
        raise FormatError("the passphrase key stanza is corrupted (its checksum does not match)")
    salt, log2_n, r, p = _PASSPHRASE_HEAD.unpack(head[:_PASSPHRASE_HEAD.size])
    check_scrypt_parameters(log2_n, r, p, FormatError)
    return PassphraseBody(salt, log2_n, r, p, head[_PASSPHRASE_HEAD.size:])


def _passphrase_checksum(head: bytes) -> bytes:
    return hashlib.sha256(_PASSPHRASE_CHECKSUM_INFO + head).digest()[:PASSPHRASE_CHECKSUM_SIZE]


def check_scrypt_parameters(log2_n: int, r: int, p: int, error: type) -> None:
    """Raises error (ValueError for a writer, FormatError for a reader) for scrypt parameters
    outside the format's bounds or beyond its memory and work limits (FORMAT.md 2.8)."""
    if not SCRYPT_MIN_LOG2_N <= log2_n <= SCRYPT_MAX_LOG2_N:
        raise error(f"scrypt work factor log2(N) must be {SCRYPT_MIN_LOG2_N}..{SCRYPT_MAX_LOG2_N}, got {log2_n}")
    if not 1 <= r <= SCRYPT_MAX_R or not 1 <= p <= SCRYPT_MAX_P:
        raise error(f"scrypt parameters r={r}, p={p} are out of range (r 1..{SCRYPT_MAX_R}, p 1..{SCRYPT_MAX_P})")
    if 128 * r * 2**log2_n > SCRYPT_MAX_MEMORY or r * p * 2**log2_n > SCRYPT_MAX_COST:
        raise error(f"the passphrase key stanza asks for more scrypt work than a reader spends "
                    f"(log2(N)={log2_n}, r={r}, p={p}; at most 128*r*N = 4 GiB of memory and "
                    f"N*r*p = 2^{SCRYPT_MAX_LOG2_N}*8)")


# -- pkcs11 and kms: a key reference and an opaque wrapped key -----------------------------

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")


def reference_body(provider: str, key_ref: str, wrapped_key: bytes) -> bytes:
    """provider (u8 length, ASCII) || key reference (u16 length, UTF-8) || wrapped key (rest)."""
    name = provider.encode("ascii")
    ref = key_ref.encode("utf-8")
    if not 1 <= len(name) <= 64 or not 1 <= len(ref) <= MAX_REFERENCE_SIZE:
        raise ValueError("provider name must be 1..64 ASCII bytes and key reference 1..1024 bytes")
    if not 1 <= len(wrapped_key) <= MAX_WRAPPED_SIZE:
        raise ValueError(f"a wrapped key must be 1..{MAX_WRAPPED_SIZE} bytes, got {len(wrapped_key)}")
    return _U8.pack(len(name)) + name + _U16.pack(len(ref)) + ref + bytes(wrapped_key)


def parse_reference(body: bytes, type_name: str) -> ReferenceBody:
    """Parses a pkcs11 or kms stanza body (see reference_body)."""
    def fail(why: str) -> FormatError:
        return FormatError(f"malformed {type_name} key stanza: {why}")

    if len(body) < 1:
        raise fail("empty body")
    name_len = body[0]
    name_end = 1 + name_len
    if not 1 <= name_len <= 64 or len(body) < name_end + 2:
        raise fail("bad provider name length")
    (ref_len,) = _U16.unpack(body[name_end:name_end + 2])
    ref_end = name_end + 2 + ref_len
    if not 1 <= ref_len <= MAX_REFERENCE_SIZE or len(body) < ref_end:
        raise fail("bad key reference length")
    wrapped = body[ref_end:]
    if not 1 <= len(wrapped) <= MAX_WRAPPED_SIZE:
        raise fail(f"wrapped key must be 1..{MAX_WRAPPED_SIZE} bytes, found {len(wrapped)}")
    try:
        provider = body[1:name_end].decode("ascii")
        key_ref = body[name_end + 2:ref_end].decode("utf-8")
    except UnicodeDecodeError:
        raise fail("provider name or key reference is not text") from None
    return ReferenceBody(provider, key_ref, wrapped)


def parse_pkcs11(body: bytes) -> ReferenceBody:
    """Parses and checks a pkcs11 stanza body: provider ``"pkcs11"``, an RFC 7512 URI naming a
    token and an object (``_pkcs11uri.parse_uri``), a 40-byte RFC 3394 wrapped key.

    Raises:
        FormatError: any of these does not hold.
    """
    parsed = parse_reference(body, "pkcs11")
    if parsed.provider != PKCS11_PROVIDER:
        raise FormatError(f"malformed pkcs11 key stanza: provider {parsed.provider!r}, not 'pkcs11'")
    try:
        parse_uri(parsed.key_ref)
    except ValueError as exc:  # the message quotes attribute names only, never values
        raise FormatError(f"malformed pkcs11 key stanza: {exc}") from None
    if len(parsed.wrapped_key) != AES_KW_SIZE:
        raise FormatError(f"malformed pkcs11 key stanza: the wrapped key is "
                          f"{len(parsed.wrapped_key)} bytes, not {AES_KW_SIZE}")
    return parsed


def parse_kms(body: bytes) -> ReferenceBody:
    """Parses and checks a kms stanza body: a provider name of 1 to 64 ASCII letters, digits,
    ``.``, ``_`` or ``-`` (not starting with one of the last three), a key reference without NUL.

    Raises:
        FormatError: any of these does not hold.
    """
    parsed = parse_reference(body, "kms")
    if not KMS_PROVIDER_NAME.match(parsed.provider):
        raise FormatError("malformed kms key stanza: the provider name must be 1 to 64 ASCII "
                          "letters, digits, '.', '_' or '-', starting with a letter or digit")
    if "\x00" in parsed.key_ref:
        raise FormatError("malformed kms key stanza: the key reference holds a NUL character")
    return parsed


# -- the registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StanzaType:
    """A stanza type a reader knows: its name, body check, and the key it needs."""

    code: int
    name: str
    check: Callable[[bytes], object]  # raises FormatError for a malformed body
    key_id: Callable[[bytes], str]  # public name of the key that opens the stanza


def _direct_check(body: bytes) -> None:
    _require_size("direct", body, KEY_ID_SIZE)


def _reference_id(type_name: str) -> Callable[[bytes], str]:
    def key_id(body: bytes) -> str:
        parsed = parse_reference(body, type_name)
        # A reference that is already a URI of the provider's scheme (RFC 7512 "pkcs11:...")
        # is its own id; others get the provider as a prefix ("aws-kms:arn:...").
        if parsed.key_ref.startswith(parsed.provider + ":"):
            return _escaped(parsed.key_ref)
        return _escaped(f"{parsed.provider}:{parsed.key_ref}")
    return key_id


# The name comes from the file: its control characters (a line break that forges an audit
# line, a terminal escape) are shown escaped wherever the id goes (errors, logs, metrics).
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(text: str) -> str:
    return _CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                                   else f"\\u{ord(m.group()):04x}", text)


TYPES: dict[int, StanzaType] = {
    t.code: t for t in (
        StanzaType(DIRECT, "direct", _direct_check, lambda body: body.hex()),
        StanzaType(KEYRING, "keyring", parse_keyring, lambda body: parse_keyring(body)[0].hex()),
        StanzaType(PASSPHRASE, "passphrase", parse_passphrase, lambda body: "passphrase"),
        StanzaType(X25519, "x25519", parse_x25519, lambda body: parse_x25519(body)[0].hex()),
        StanzaType(PKCS11, "pkcs11", parse_pkcs11, _reference_id("pkcs11")),
        StanzaType(KMS, "kms", parse_kms, _reference_id("kms")),
        StanzaType(PADDING, "padding", lambda body: _check_padding(body), lambda body: ""),
    )
}


def _check_padding(body: bytes) -> None:
    if len(body) > MAX_PADDING_SIZE:
        raise FormatError(f"padding stanza over {MAX_PADDING_SIZE} bytes")


def check_stanzas(stanzas: Sequence[Stanza]) -> None:
    """Checks every known stanza's body and the rule that a passphrase stanza stands alone.

    Raises:
        FormatError: a malformed body, or a passphrase stanza beside other key stanzas.
    """
    for stanza in stanzas:
        known = TYPES.get(stanza.type)
        if known is not None:
            known.check(stanza.body)
    keyed = [s for s in stanzas if s.type != PADDING]
    if any(s.type == PASSPHRASE for s in keyed) and len(keyed) > 1:
        # A passphrase file must not also open with another key: whoever knows the passphrase
        # would otherwise not be the only one able to make or read it (as in age).
        raise FormatError("a passphrase key stanza must be the only key stanza in its file")


def type_name(code: int) -> str:
    known = TYPES.get(code)
    return known.name if known else f"unknown-0x{code:04x}"


def key_id(stanza: Stanza) -> str:
    """The public name of the key a stanza needs ("" for types that name none)."""
    known = TYPES.get(stanza.type)
    return known.key_id(stanza.body) if known else ""


@dataclass(frozen=True)
class Stanza:
    """One key stanza: a type and an opaque body the key layer interprets."""

    type: int
    body: bytes

    @property
    def critical(self) -> bool:
        return bool(self.type & STANZA_CRITICAL)

    @property
    def type_name(self) -> str:
        return type_name(self.type)
