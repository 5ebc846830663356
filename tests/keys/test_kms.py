"""KMS recipients and identities (shardseal.kms), over real HTTP and real boto3 calls.

The endpoint is moto's KMS-compatible server on 127.0.0.1 (tests/kms_server.py), standing in
for AWS KMS: it is not AWS, and nothing here contacts AWS. moto checks the encryption context
(AES-GCM AAD over it), so the binding of a wrapped key to its file is tested for real. moto does
not refuse disabled keys; the tests that need that add AWS's documented refusal to moto's
backend (``enforce_key_states``), and the error still comes back as an HTTP error response.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pickle

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import shardseal
from shardseal.container import header as _container
from shardseal.keys import envelope as _envelope, stanzas as _stanzas
from shardseal.audit import JsonFormatter
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError
from shardseal.kms import (
    CONTEXT_KEY,
    AwsKms,
    KeyProvider,
    KmsError,
    KmsIdentity,
    KmsKey,
    encryption_context,
    parse_identity,
    parse_recipient,
)

from ..kms_server import KmsServer, enforce_key_states, kms_client, unused_endpoint_url

DATA = os.urandom(40_000)  # a few Cobblestone chunks


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    kms_server = KmsServer().start()
    yield kms_server
    kms_server.stop()


@pytest.fixture(scope="module")
def aws(server):
    return AwsKms(server.client())


@pytest.fixture(scope="module")
def key_a(server):
    return server.create_key("key A")["KeyId"]


@pytest.fixture(scope="module")
def key_b(server):
    return server.create_key("key B")["KeyId"]


@pytest.fixture
def audit_log(caplog):
    """The audit records of the test (INFO and up)."""
    caplog.set_level(logging.INFO, logger="shardseal.audit")
    return caplog


class LocalAesProvider(KeyProvider):
    """A user-written provider: AES-256-GCM keys held locally, the context bound as AAD."""

    name = "local-aes"

    def __init__(self, keys: dict[str, bytes]) -> None:
        self._keys = dict(keys)

    def _key(self, key_id: str) -> AESGCM:
        if key_id not in self._keys:
            raise KmsError(f"no local key {key_id}", code="NotFound", key_id=key_id,
                           provider=self.name)
        return AESGCM(self._keys[key_id])

    @staticmethod
    def _aad(context) -> bytes:
        return json.dumps(dict(context), sort_keys=True).encode()

    def wrap(self, key_id, file_key, context):
        nonce = os.urandom(12)
        return nonce + self._key(key_id).encrypt(nonce, file_key, self._aad(context))

    def unwrap(self, key_id, wrapped, context):
        try:
            return self._key(key_id).decrypt(wrapped[:12], wrapped[12:], self._aad(context))
        except InvalidTag:
            raise AuthenticationError() from None


@pytest.fixture
def local():
    return LocalAesProvider({"k1": os.urandom(32), "k2": os.urandom(32)})


def kms_stanza(blob) -> _container.Stanza:
    (stanza,) = [s for s in _container.parse_header(blob).stanzas if s.type == _stanzas.KMS]
    return stanza


def with_key_block(blob, stanzas) -> bytes:
    """blob with its key block replaced by stanzas (fixed part and payload kept)."""
    header = _container.parse_header(blob)
    return header.fixed + _container.encode_key_block(stanzas) + bytes(blob[header.size:])


def file_key_of(blob, identity) -> bytes:
    header = _container.parse_header(blob)
    return identity.unwrap(kms_stanza(blob).body, _envelope.WrapContext(header.suite, header.fixed))


def audit_events(caplog, event):
    return [r.shardseal for r in caplog.records
            if r.name == "shardseal.audit" and r.shardseal["event"] == event]


# -- round trips ------------------------------------------------------------------------------

def test_bytes_round_trip(backend, aws, key_a):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)], metadata={"shard": 1})
    assert shardseal.decrypt(blob, identities=[KmsIdentity(aws)]) == DATA
    assert shardseal.decrypt(blob, identities=[KmsIdentity(aws, [key_a])]) == DATA
    stanzas = shardseal.inspect(blob).stanzas
    assert [(s.type, s.key_id) for s in stanzas] == [("kms", f"aws-kms:{key_a}")]


def test_file_and_open_round_trip(tmp_path, aws, key_a):
    src, enc, out = tmp_path / "plain", tmp_path / "enc", tmp_path / "out"
    src.write_bytes(DATA)
    shardseal.encrypt_file(src, enc, recipients=[KmsKey(aws, key_a)])
    shardseal.decrypt_file(enc, out, identities=[KmsIdentity(aws, key_a)])
    assert out.read_bytes() == DATA

    with shardseal.open(tmp_path / "stream", "wb", recipients=[KmsKey(aws, key_a)]) as writer:
        writer.write(DATA)
    with shardseal.open(tmp_path / "stream", "rb", identities=[KmsIdentity(aws)]) as reader:
        assert reader.read() == DATA


def test_encrypt_into_sizes_a_kms_stanza(aws, key_a):
    recipients = [KmsKey(aws, key_a)]
    out = bytearray(shardseal.encrypted_size(len(DATA), recipients=recipients))
    written = shardseal.encrypt_into(DATA, out=out, recipients=recipients)
    assert written == len(out)
    assert shardseal.decrypt(out, identities=[KmsIdentity(aws)]) == DATA


def test_alias_and_arn_references(server, aws):
    key = server.create_key()
    server.client().create_alias(AliasName="alias/shardseal-test", TargetKeyId=key["KeyId"])
    for reference in ("alias/shardseal-test", key["Arn"]):
        blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, reference)])
        assert shardseal.inspect(blob).stanzas[0].key_id == f"aws-kms:{reference}"
        assert shardseal.decrypt(blob, identities=[KmsIdentity(aws, [reference])]) == DATA


def test_two_kms_keys_each_open_alone(aws, key_a, key_b, audit_log):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a), KmsKey(aws, key_b)])
    for key in (key_a, key_b):
        audit_log.clear()
        assert shardseal.decrypt(blob, identities=[KmsIdentity(aws, [key])]) == DATA
        assert [e["key_id"] for e in audit_events(audit_log, "unwrap")] == [f"aws-kms:{key}"]


def test_rewrapped_stanza_keeps_a_valid_context(aws, key_a, key_b):
    # Key rotation rewrites only the key block: the fixed part, hence the context, is unchanged.
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)], metadata={"v": 1})
    header = _container.parse_header(blob)
    file_key = file_key_of(blob, KmsIdentity(aws))
    context = _envelope.WrapContext(header.suite, header.fixed)
    rotated = with_key_block(blob, _envelope.wrap_for([KmsKey(aws, key_b)], file_key, context))
    assert shardseal.decrypt(rotated, identities=[KmsIdentity(aws, [key_b])]) == DATA
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(rotated, identities=[KmsIdentity(aws, [key_a])])


# -- keys that do not match -------------------------------------------------------------------

def test_wrong_key_names_the_needed_key(aws, key_a, key_b):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)])
    with pytest.raises(KeyNotFoundError, match=f"KMS key aws-kms:{key_a}") as caught:
        shardseal.decrypt(blob, identities=[KmsIdentity(aws, [key_b])])
    assert caught.value.key_ids == (f"aws-kms:{key_a}",)


def test_other_provider_is_not_asked(aws, key_a, local):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(local, "k1")])
    with pytest.raises(KeyNotFoundError) as caught:
        shardseal.decrypt(blob, identities=[KmsIdentity(aws)])
    assert caught.value.key_ids == ("local-aes:k1",)

    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)])
    with pytest.raises(KeyNotFoundError) as caught:
        shardseal.decrypt(blob, identities=[KmsIdentity(local)])
    assert caught.value.key_ids == (f"aws-kms:{key_a}",)


# -- the encryption context -------------------------------------------------------------------

def test_the_kms_binds_the_encryption_context(server, aws, key_a):
    context = {CONTEXT_KEY: "aa" * 32}
    wrapped = aws.wrap(key_a, bytes(32), context)
    client = server.client()
    assert client.decrypt(CiphertextBlob=wrapped, KeyId=key_a, EncryptionContext=context)["Plaintext"] == bytes(32)
    for other in ({CONTEXT_KEY: "bb" * 32}, {}):
        with pytest.raises(client.exceptions.InvalidCiphertextException):
            client.decrypt(CiphertextBlob=wrapped, KeyId=key_a, EncryptionContext=other)
    with pytest.raises(AuthenticationError):
        aws.unwrap(key_a, wrapped, {CONTEXT_KEY: "bb" * 32})


def test_encryption_context_is_the_header_digest(aws, key_a):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)], metadata={"shard": 7})
    header = _container.parse_header(blob)
    context = encryption_context(_envelope.WrapContext(header.suite, header.fixed))
    assert context == {"shardseal:header-sha256": hashlib.sha256(header.fixed).hexdigest()}
    with pytest.raises(TypeError):
        encryption_context({"suite": 256})


@pytest.mark.parametrize("provider_name", ["aws", "local"])
def test_stanza_copied_into_another_file_is_refused(request, audit_log, key_a, provider_name):
    provider = request.getfixturevalue(provider_name)
    key_ref = key_a if provider_name == "aws" else "k1"
    blob_a = shardseal.encrypt(DATA, recipients=[KmsKey(provider, key_ref)], metadata={"shard": 1})
    identity = KmsIdentity(provider)
    # File B uses the very same file key, so only the context can stop A's stanza from opening it.
    file_key = file_key_of(blob_a, identity)
    blob_b = shardseal.encrypt(b"other data", file_key, metadata={"shard": 2})
    forged = with_key_block(blob_b, [kms_stanza(blob_a)])

    audit_log.clear()
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(forged, identities=[identity])
    # Refused when unwrapping (by the KMS), not later by the payload's commitment.
    assert [e["error"] for e in audit_events(audit_log, "unwrap_failed")] == ["AuthenticationError"]
    assert audit_events(audit_log, "unwrap") == []
    assert shardseal.decrypt(blob_a, identities=[identity]) == DATA


def test_tampered_wrapped_key_fails_authentication(aws, key_a):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)])
    stanza = _stanzas.parse_reference(kms_stanza(blob).body, "kms")
    wrapped = bytearray(stanza.wrapped_key)
    wrapped[-1] ^= 1
    body = _stanzas.reference_body(stanza.provider, stanza.key_ref, bytes(wrapped))
    tampered = with_key_block(blob, [_container.Stanza(_stanzas.KMS, body)])
    with pytest.raises(AuthenticationError, match=f"aws-kms:{key_a}"):
        shardseal.decrypt(tampered, identities=[KmsIdentity(aws)])


# -- KMS refusals -----------------------------------------------------------------------------

def test_disabled_key_is_a_kms_error(server, aws, key_a, monkeypatch, audit_log):
    enforce_key_states(monkeypatch)
    key_c = server.create_key("key C")["KeyId"]
    only_c = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_c)])
    c_and_a = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_c), KmsKey(aws, key_a)])
    server.client().disable_key(KeyId=key_c)

    with pytest.raises(KmsError, match=f"aws-kms:{key_c}.*DisabledException") as caught:
        shardseal.decrypt(only_c, identities=[KmsIdentity(aws)])
    error = caught.value
    assert (error.code, error.key_id, error.provider) == ("DisabledException", key_c, "aws-kms")
    with pytest.raises(KmsError) as caught:
        shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_c)])
    assert caught.value.code == "DisabledException"

    # Another stanza still opens the file; the refusal is in the audit log.
    audit_log.clear()
    assert shardseal.decrypt(c_and_a, identities=[KmsIdentity(aws)]) == DATA
    assert [(e["key_id"], e["error"]) for e in audit_events(audit_log, "unwrap_failed")] == [
        (f"aws-kms:{key_c}", "KmsError")]


def test_key_pending_deletion_is_a_kms_error(server, aws, monkeypatch):
    enforce_key_states(monkeypatch)
    key = server.create_key("key D")["KeyId"]
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key)])
    server.client().schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    with pytest.raises(KmsError) as caught:
        shardseal.decrypt(blob, identities=[KmsIdentity(aws)])
    assert (caught.value.code, caught.value.key_id) == ("KMSInvalidStateException", key)


def test_missing_key_is_a_kms_error(aws):
    for reference in ("alias/no-such-key", "11111111-2222-3333-4444-555555555555"):
        with pytest.raises(KmsError, match="NotFoundException") as caught:
            shardseal.encrypt(DATA, recipients=[KmsKey(aws, reference)])
        assert (caught.value.code, caught.value.key_id) == ("NotFoundException", reference)


def test_stanza_naming_another_key_is_refused(aws, key_a, key_b):
    # The key reference is outside the wrapped key: a stanza that names B but holds a key
    # wrapped by A is refused by the KMS (moto: AccessDeniedException; AWS:
    # IncorrectKeyException), so it never decrypts under a key other than the one it names.
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)])
    wrapped = _stanzas.parse_reference(kms_stanza(blob).body, "kms").wrapped_key
    body = _stanzas.reference_body("aws-kms", key_b, wrapped)
    relabelled = with_key_block(blob, [_container.Stanza(_stanzas.KMS, body)])
    with pytest.raises(KmsError) as caught:
        shardseal.decrypt(relabelled, identities=[KmsIdentity(aws)])
    assert (caught.value.code, caught.value.key_id) == ("AccessDeniedException", key_b)


def test_unreachable_endpoint_is_a_kms_error(aws, key_a):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)])
    offline = AwsKms(kms_client(unused_endpoint_url()))
    with pytest.raises(KmsError, match="EndpointConnectionError") as caught:
        shardseal.encrypt(DATA, recipients=[KmsKey(offline, key_a)])
    assert caught.value.code == "EndpointConnectionError"
    with pytest.raises(KmsError) as caught:
        shardseal.decrypt(blob, identities=[KmsIdentity(offline)])
    assert (caught.value.code, caught.value.key_id) == ("EndpointConnectionError", key_a)


# -- a user-written provider ------------------------------------------------------------------

def test_user_provider_end_to_end(tmp_path, aws, key_a, local):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(local, "k1"), KmsKey(aws, key_a)])
    assert shardseal.decrypt(blob, identities=[KmsIdentity(local)]) == DATA
    assert shardseal.decrypt(blob, identities=[KmsIdentity(local, ["k1"])]) == DATA
    assert shardseal.decrypt(blob, identities=[KmsIdentity(aws)]) == DATA
    assert [s.key_id for s in shardseal.inspect(blob).stanzas] == ["local-aes:k1", f"aws-kms:{key_a}"]

    with shardseal.open(tmp_path / "f", "wb", recipients=[KmsKey(local, "k2")]) as writer:
        writer.write(DATA)
    with shardseal.open(tmp_path / "f", "rb", identities=[KmsIdentity(local, "k2")]) as reader:
        assert reader.read() == DATA


def test_user_provider_errors_pass_through(local):
    with pytest.raises(KmsError, match="no local key k9") as caught:
        shardseal.encrypt(DATA, recipients=[KmsKey(local, "k9")])
    assert (caught.value.code, caught.value.provider) == ("NotFound", "local-aes")
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(local, "k1")])
    other_keys = LocalAesProvider({"k1": os.urandom(32)})  # same name and id, another key
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(blob, identities=[KmsIdentity(other_keys)])


# -- strings, the default client, arguments ---------------------------------------------------

@pytest.fixture
def aws_env(server, monkeypatch, tmp_path):
    """The process environment of a user whose AWS configuration points at the test server
    (monkeypatched: restored after the test; no config files, no instance metadata)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # not AWS_DEFAULT_REGION: AwsKms falls back
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.endpoint_url)
    return monkeypatch


def test_default_client_and_strings(aws_env, server, key_a):
    assert repr(AwsKms()) == f"AwsKms(region_name='us-east-1', endpoint_url='{server.endpoint_url}')"
    recipient = parse_recipient(f"aws-kms:{key_a}")
    assert recipient.key_id == f"aws-kms:{key_a}"
    blob = shardseal.encrypt(DATA, recipients=[recipient])
    for text in ("aws-kms", f"aws-kms:{key_a}"):
        assert shardseal.decrypt(blob, identities=[parse_identity(text)]) == DATA
    assert parse_identity("aws-kms").key_ids == ("aws-kms:*",)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_default_client_is_rebuilt_after_fork(aws_env, key_a):
    # DataLoader workers fork: a child must not share the parent's HTTP connections.
    provider = AwsKms()
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(provider, key_a)])
    parent_client = provider._kms()
    pid = os.fork()
    if pid == 0:
        try:
            opened = shardseal.decrypt(blob, identities=[KmsIdentity(provider)]) == DATA
            os._exit(0 if opened and provider._kms() is not parent_client else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert provider._kms() is parent_client


def test_no_region_is_a_value_error(aws_env):
    aws_env.delenv("AWS_REGION")
    with pytest.raises(ValueError, match="region"):
        AwsKms()


@pytest.mark.parametrize("text", ["aws-kms:", "gcp-kms:key", "aws-kmsx", "", "shardseal1xabc"])
def test_parse_rejects_other_strings(text):
    for parse in (parse_recipient, parse_identity):
        with pytest.raises(ValueError, match="not a KMS"):
            parse(text)
    with pytest.raises(TypeError):
        parse_recipient(b"aws-kms:key")


def test_bad_arguments(aws, server):
    class BadName(LocalAesProvider):
        name = "bad:name"

    with pytest.raises(TypeError, match="KeyProvider"):
        KmsKey("aws-kms", "key")
    with pytest.raises(TypeError, match="str"):
        KmsKey(aws, 5)
    with pytest.raises(ValueError, match="1 to 1024"):
        KmsKey(aws, "")
    with pytest.raises(ValueError, match="1 to 1024"):
        KmsKey(aws, "k" * 1025)
    with pytest.raises(ValueError, match="name"):
        KmsIdentity(BadName({}))
    with pytest.raises(ValueError, match="at least one"):
        KmsIdentity(aws, [])
    with pytest.raises(TypeError, match="not both"):
        AwsKms(server.client(), region_name="us-east-1")


def test_malformed_stanza_is_a_format_error(aws):
    with pytest.raises(FormatError):
        KmsIdentity(aws).unwrap(b"\x00", _envelope.WrapContext(256, b""))


# -- secrets stay secret ----------------------------------------------------------------------

def test_nothing_pickles(aws, key_a, local):
    for obj in (aws, local, KmsKey(aws, key_a), KmsIdentity(aws), KmsKey(local, "k1")):
        with pytest.raises(TypeError, match="not picklable"):
            pickle.dumps(obj)


def test_repr_shows_key_ids_only(local):
    secret = local._keys["k1"]
    for obj in (KmsKey(local, "k1"), KmsIdentity(local, ["k1"])):
        text = repr(obj) + str(obj)
        assert "local-aes:k1" in text
        assert secret.hex() not in text and repr(secret) not in text


def test_audit_log_has_key_ids_and_no_key_material(aws, key_a, key_b, audit_log):
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(aws, key_a)])
    assert shardseal.decrypt(blob, identities=[KmsIdentity(aws)]) == DATA
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(blob, identities=[KmsIdentity(aws, [key_b])])
    file_key = file_key_of(blob, KmsIdentity(aws))
    wrapped = _stanzas.parse_reference(kms_stanza(blob).body, "kms").wrapped_key

    formatter = JsonFormatter()
    lines = [formatter.format(r) + r.getMessage() for r in audit_log.records
             if r.name == "shardseal.audit"]
    text = "\n".join(lines)
    assert {json.loads(formatter.format(r))["event"] for r in audit_log.records} >= {
        "wrap", "unwrap", "key_not_found"}
    assert f"aws-kms:{key_a}" in text
    for secret in (file_key, wrapped):
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]):
            assert form not in text
