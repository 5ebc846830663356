"""Parse-time stanza checks (docs/FORMAT.md 2.4, 2.8, 2.10, 2.11) and the bound on unwrap
attempts per identity (section 4, step 7).

Every malformed body of a known stanza type is a FormatError when the header is parsed:
``inspect`` and a decrypt with the right direct key (which never tries the stanza) both refuse
it. A hostile file with many stanzas addressed to one identity costs at most
``MAX_UNWRAP_ATTEMPTS`` KMS requests, HSM operations or scrypt runs.
"""

from __future__ import annotations

import os
import struct

import pytest

import shardseal
from shardseal.container import header as _container
from shardseal.keys import envelope as _envelope, stanzas as _stanzas
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError
from shardseal.kms import KeyProvider, KmsIdentity, KmsKey

DATA = b"payload"


def container_with(stanzas: list[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    """A direct-key container with extra raw stanzas before its direct stanza, and its key."""
    key = shardseal.generate_key()
    blob = shardseal.encrypt(DATA, key)
    header = _container.parse_header(blob)
    block = struct.pack(">H", len(stanzas) + 1) + b"".join(
        struct.pack(">HI", t, len(body)) + body for t, body in stanzas)
    block += struct.pack(">HI", _stanzas.DIRECT, 16) + header.stanzas[0].body
    return header.fixed + block + blob[header.size:], key


def reference(provider: bytes, key_ref: bytes, wrapped: bytes) -> bytes:
    """A reference stanza body from raw bytes (no writer-side checks)."""
    return bytes([len(provider)]) + provider + struct.pack(">H", len(key_ref)) + key_ref + wrapped


URI = b"pkcs11:token=ml-keys;object=kek-2026"

MALFORMED = {
    # PKCS#11: the wrapped key is exactly the 40-byte RFC 3394 output.
    "pkcs11-wrapped-39": (_stanzas.PKCS11, reference(b"pkcs11", URI, bytes(39)), "40"),
    "pkcs11-wrapped-41": (_stanzas.PKCS11, reference(b"pkcs11", URI, bytes(41)), "40"),
    "pkcs11-wrapped-1": (_stanzas.PKCS11, reference(b"pkcs11", URI, bytes(1)), "40"),
    "pkcs11-provider": (_stanzas.PKCS11, reference(b"aws-kms", URI, bytes(40)), "provider"),
    "pkcs11-provider-case": (_stanzas.PKCS11, reference(b"PKCS11", URI, bytes(40)), "provider"),
    # PKCS#11: the reference is an RFC 7512 URI naming a token and an object, nothing else.
    "pkcs11-uri-no-scheme": (_stanzas.PKCS11, reference(b"pkcs11", b"token=a;object=b", bytes(40)), "starts"),
    "pkcs11-uri-query": (_stanzas.PKCS11, reference(b"pkcs11", URI + b"?pin-value=1234", bytes(40)), "query"),
    "pkcs11-uri-attribute": (_stanzas.PKCS11, reference(b"pkcs11", URI + b";id=%01", bytes(40)), "unsupported"),
    "pkcs11-uri-no-object": (_stanzas.PKCS11, reference(b"pkcs11", b"pkcs11:token=a", bytes(40)), "no object"),
    "pkcs11-uri-twice": (_stanzas.PKCS11, reference(b"pkcs11", URI + b";token=b", bytes(40)), "twice"),
    "pkcs11-uri-bad-escape": (_stanzas.PKCS11, reference(b"pkcs11", b"pkcs11:token=a%zz;object=b", bytes(40)),
                              "percent"),
    "pkcs11-uri-not-utf8": (_stanzas.PKCS11, reference(b"pkcs11", b"pkcs11:token=%ff;object=b", bytes(40)),
                            "UTF-8"),
    "pkcs11-uri-type": (_stanzas.PKCS11, reference(b"pkcs11", URI + b";type=private", bytes(40)), "type"),
    "pkcs11-uri-long-token": (_stanzas.PKCS11, reference(b"pkcs11", b"pkcs11:token=" + b"t" * 33 + b";object=b",
                                                         bytes(40)), "token label"),
    "pkcs11-uri-empty-object": (_stanzas.PKCS11, reference(b"pkcs11", b"pkcs11:token=a;object=", bytes(40)),
                                "key label"),
    # KMS: the provider name rule of KeyProvider.name; a key reference without NUL.
    "kms-provider-space": (_stanzas.KMS, reference(b"aws kms", b"k", b"w"), "provider name"),
    "kms-provider-colon": (_stanzas.KMS, reference(b"aws:kms", b"k", b"w"), "provider name"),
    "kms-provider-dash-first": (_stanzas.KMS, reference(b"-aws", b"k", b"w"), "provider name"),
    "kms-provider-not-ascii": (_stanzas.KMS, reference("kmś".encode(), b"k", b"w"), "provider name"),
    "kms-reference-nul": (_stanzas.KMS, reference(b"aws-kms", b"alias/a\x00b", b"w"), "NUL"),
    "kms-reference-not-utf8": (_stanzas.KMS, reference(b"aws-kms", b"\xff", b"w"), "not text"),
    # Fixed sizes.
    "direct-15": (_stanzas.DIRECT, bytes(15), "16-byte"),
    "keyring-57": (_stanzas.KEYRING, bytes(57), "56-byte"),
    "x25519-95": (_stanzas.X25519, bytes(95), "96-byte"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_stanza_is_refused_at_parse_time(backend, name):
    stanza_type, body, fragment = MALFORMED[name]
    blob, key = container_with([(stanza_type, body)])
    with pytest.raises(FormatError, match=fragment):
        shardseal.inspect(blob)
    with pytest.raises(FormatError, match=fragment):
        shardseal.decrypt(blob, key)
    with pytest.raises(FormatError, match=fragment):
        _container.parse_header(blob)


def test_malformed_stanza_messages_do_not_quote_secret_looking_values():
    blob, key = container_with([(_stanzas.PKCS11, reference(b"pkcs11", URI + b"?pin-value=s3cr3t-PIN",
                                                              bytes(40)))])
    with pytest.raises(FormatError) as info:
        shardseal.inspect(blob)
    assert "s3cr3t" not in str(info.value)


def test_well_formed_reference_stanzas_are_skipped_by_a_direct_key(backend):
    blob, key = container_with([(_stanzas.PKCS11, reference(b"pkcs11", URI, bytes(40))),
                                (_stanzas.KMS, reference(b"vault-transit", b"alias/a", bytes(3)))])
    assert shardseal.decrypt(blob, key) == DATA
    assert [s.key_id for s in shardseal.inspect(blob).stanzas[:2]] == [
        URI.decode(), "vault-transit:alias/a"]


# -- the bound on unwrap attempts ---------------------------------------------------------

class CountingProvider(KeyProvider):
    """A KMS provider that counts unwrap requests; it opens only what it wrapped."""

    name = "counting"

    def __init__(self) -> None:
        self.unwraps = 0

    def wrap(self, key_id, file_key, context):
        return b"ok" + bytes(file_key)

    def unwrap(self, key_id, wrapped, context):
        self.unwraps += 1
        if not wrapped.startswith(b"ok"):
            raise AuthenticationError()
        return wrapped[2:]


def kms_file(provider: KeyProvider, bogus: int, good: bool) -> bytes:
    """A file for provider whose key block holds `bogus` KMS stanzas that do not open, then
    (if good) the one that does."""
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(provider, "key-1")])
    header = _container.parse_header(blob)
    real = header.stanzas[0]
    fake = _container.Stanza(_stanzas.KMS, _stanzas.reference_body(provider.name, "key-1", b"no" + bytes(32)))
    stanzas = [fake] * bogus + ([real] if good else [])
    return header.fixed + _container.encode_key_block(stanzas) + blob[header.size:]


def test_a_hostile_file_with_1024_kms_stanzas_costs_at_most_the_limit():
    provider = CountingProvider()
    blob = kms_file(provider, 1024, good=False)
    with pytest.raises(KeyNotFoundError, match="gave up") as info:
        shardseal.decrypt(blob, identities=[KmsIdentity(provider)])
    assert provider.unwraps == _envelope.MAX_UNWRAP_ATTEMPTS == 8
    assert type(info.value) is KeyNotFoundError
    assert "AuthenticationError" in str(info.value) and "counting:*" in str(info.value)
    assert info.value.key_ids == ("counting:key-1",) * 1024


def test_exactly_the_limit_of_failures_raises_the_first_failure():
    provider = CountingProvider()
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(kms_file(provider, 8, good=False), identities=[KmsIdentity(provider)])
    assert provider.unwraps == 8


def test_a_good_stanza_within_the_limit_opens():
    provider = CountingProvider()
    assert shardseal.decrypt(kms_file(provider, 7, good=True), identities=[KmsIdentity(provider)]) == DATA
    assert provider.unwraps == 8


def test_a_good_stanza_past_the_limit_is_not_reached():
    provider = CountingProvider()
    with pytest.raises(KeyNotFoundError, match="gave up"):
        shardseal.decrypt(kms_file(provider, 8, good=True), identities=[KmsIdentity(provider)])
    assert provider.unwraps == 8


def test_each_identity_has_its_own_limit_and_a_later_one_may_open():
    provider, other = CountingProvider(), CountingProvider()
    blob = kms_file(provider, 20, good=True)
    # The first identity gives up after 8; the second (same provider name) starts afresh and
    # also gives up, since the good stanza is the 21st.
    with pytest.raises(KeyNotFoundError, match="gave up"):
        shardseal.decrypt(blob, identities=[KmsIdentity(provider), KmsIdentity(other)])
    assert (provider.unwraps, other.unwraps) == (8, 8)
    # The 20 bogus KMS stanzas beside a direct stanza, on a direct-key file.
    key = shardseal.generate_key()
    direct_blob = shardseal.encrypt(DATA, key)
    direct = _container.parse_header(direct_blob)
    bogus = list(_container.parse_header(blob).stanzas[:20])
    mixed = (direct.fixed + _container.encode_key_block(bogus + [direct.stanzas[0]])
             + direct_blob[direct.size:])
    provider.unwraps = 0
    assert shardseal.decrypt(mixed, key, identities=[KmsIdentity(provider)]) == DATA
    assert provider.unwraps == 0  # the direct key comes first and opens
    assert shardseal.decrypt(mixed, identities=[KmsIdentity(provider), _envelope.DirectKey(key)]) == DATA
    assert provider.unwraps == 8  # the KMS identity gave up; the next identity opened


def test_stanzas_not_addressed_to_an_identity_cost_nothing():
    provider = CountingProvider()
    blob = kms_file(provider, 1024, good=False)
    with pytest.raises(KeyNotFoundError, match="none of the given"):
        shardseal.decrypt(blob, identities=[KmsIdentity(provider, ["another-key"])])
    assert provider.unwraps == 0


class CountingIdentity(_envelope.Identity):
    """A user-written identity with its own, lower limit."""

    stanza_type = _stanzas.KEYRING
    max_unwrap_attempts = 2

    def __init__(self) -> None:
        self.calls = 0

    @property
    def key_ids(self):
        return ("counting",)

    def unwrap(self, body, context):
        self.calls += 1
        raise AuthenticationError()


def test_an_identity_subclass_may_set_a_lower_limit():
    identity = CountingIdentity()
    blob, _ = container_with([(_stanzas.KEYRING, bytes(56))] * 10)
    with pytest.raises(KeyNotFoundError, match="gave up"):
        shardseal.decrypt(blob, identities=[identity])
    assert identity.calls == 2


def test_a_passphrase_tries_one_stanza():
    from shardseal.passphrase import Passphrase

    assert Passphrase.max_unwrap_attempts == 1
    assert KmsIdentity.max_unwrap_attempts == _envelope.MAX_UNWRAP_ATTEMPTS


def test_the_identity_order_is_the_callers_and_stanza_order_the_headers(monkeypatch):
    """Step 7: identities outer (key= first, then identities= in order), stanzas inner."""
    calls = []
    providers = [CountingProvider(), CountingProvider()]
    for index, provider in enumerate(providers):
        provider.name = f"p{index}"
        original = provider.unwrap

        def unwrap(key_id, wrapped, context, original=original, index=index):
            calls.append((index, key_id))
            return original(key_id, wrapped, context)

        provider.unwrap = unwrap
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(providers[0], "a")])
    header = _container.parse_header(blob)
    fake = [_container.Stanza(_stanzas.KMS, _stanzas.reference_body(p.name, ref, b"no"))
            for p in providers for ref in ("x", "y")]
    blob = header.fixed + _container.encode_key_block(fake[::-1]) + blob[header.size:]
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(blob, identities=[KmsIdentity(providers[1]), KmsIdentity(providers[0])])
    assert calls == [(1, "y"), (1, "x"), (0, "y"), (0, "x")]


def test_pkcs11_stanza_limit_counts_token_operations(monkeypatch):
    """A Pkcs11Key is bounded like any identity: counted with a stand-in for the token."""
    from shardseal import pkcs11

    monkeypatch.setenv(pkcs11.MODULE_ENV, "/nonexistent/libpkcs11.so")
    key = pkcs11.Pkcs11Key("ml-keys", "kek-2026")
    operations = []

    def refuse(action, operation):
        operations.append(action)
        raise AuthenticationError()

    monkeypatch.setattr(key, "_call", refuse)
    body = _stanzas.reference_body("pkcs11", key.uri, os.urandom(40))
    blob, _ = container_with([(_stanzas.PKCS11, body)] * 1000)
    with pytest.raises(KeyNotFoundError, match="gave up"):
        shardseal.decrypt(blob, identities=[key])
    assert len(operations) == _envelope.MAX_UNWRAP_ATTEMPTS
