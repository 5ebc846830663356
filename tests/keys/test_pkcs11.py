"""PKCS#11 key-encryption keys (shardseal.pkcs11) against a real SoftHSM2 token.

The HSM tests skip when SoftHSM2 or python-pkcs11 is missing, and fail instead under
SHARDSEAL_REQUIRE_HSM=1 (see tests/softhsm.py). The URI tests need neither.
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading

import pytest

import shardseal
from shardseal.container import header as _container
from shardseal.keys import envelope as _envelope, stanzas as _stanzas
from shardseal.keys import pkcs11 as hsm
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError, ShardsealError
from tests import softhsm
from tests.conftest import WYCHEPROOF

PIN = "2468-1357"
SO_PIN = "97531-8642"
WRONG_PIN = "wrong-pin-31337"
TOKEN_A = "shardseal-a"
TOKEN_B = "shardseal-b"
TOKEN_LOGIN = "shardseal-login"  # nothing stays logged in here: for the PIN tests
DATA = bytes(range(256)) * 200 + b"tail"  # spans three chunks


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_path(tmp_path_factory):
    """A SoftHSM2 folder with every token these tests use (SoftHSM2 lists its tokens once, at
    C_Initialize, so all are created before the first PKCS#11 call)."""
    path = softhsm.require()
    token_store = softhsm.SoftHsm(tmp_path_factory.mktemp("softhsm"), path)
    for label in (TOKEN_A, TOKEN_B, TOKEN_LOGIN):
        token_store.init_token(label, PIN, SO_PIN)
    yield path
    token_store.close()


@pytest.fixture(scope="module")
def p11(module_path):
    import pkcs11

    return pkcs11


@pytest.fixture(scope="module")
def kek(module_path):
    with hsm.create_kek(TOKEN_A, "kek-2026", module=module_path, pin=PIN) as key:
        yield key


@pytest.fixture(scope="module")
def kek_b(module_path):
    with hsm.create_kek(TOKEN_B, "kek-b", module=module_path, pin=PIN) as key:
        yield key


def stanza_of(blob: bytes) -> _container.Stanza:
    (stanza,) = _container.parse_header(blob).stanzas
    return stanza


def context_of(blob: bytes) -> _envelope.WrapContext:
    header = _container.parse_header(blob)
    return _envelope.WrapContext(header.suite, header.fixed)


def session_key(p11, session, value: bytes, label: str):
    """A session AES key with a known value (for interop and Wycheproof tests only)."""
    return session.create_object({
        p11.Attribute.CLASS: p11.ObjectClass.SECRET_KEY, p11.Attribute.KEY_TYPE: p11.KeyType.AES,
        p11.Attribute.VALUE: value, p11.Attribute.LABEL: label, p11.Attribute.TOKEN: False,
        p11.Attribute.PRIVATE: False, p11.Attribute.WRAP: True, p11.Attribute.UNWRAP: True,
    })


# -- URIs (no HSM needed) -----------------------------------------------------------------------

def test_uri_round_trip_with_percent_encoding():
    uri = hsm.make_uri("ml keys/ü", "kek;2026?%")
    assert uri == "pkcs11:token=ml%20keys%2F%C3%BC;object=kek%3B2026%3F%25"
    assert hsm.parse_uri(uri) == ("ml keys/ü", "kek;2026?%")
    assert hsm.make_uri("ml-keys", "kek-2026") == "pkcs11:token=ml-keys;object=kek-2026"


def test_parse_uri_accepts_type_secret_key_and_any_order():
    assert hsm.parse_uri("pkcs11:object=k;type=secret-key;token=t") == ("t", "k")


@pytest.mark.parametrize(("uri", "fragment"), [
    ("pkcs:token=t;object=k", "starts with 'pkcs11:'"),
    ("pkcs11:token=t", "no object"),
    ("pkcs11:", "no token and no object"),
    ("pkcs11:token=t;object=k;serial=42", "unsupported PKCS#11 URI attribute 'serial'"),
    ("pkcs11:token=t;token=u;object=k", "appears twice"),
    ("pkcs11:token=t;object", "name=value"),
    ("pkcs11:token=t;;object=k", "name=value"),
    ("pkcs11:token=a b;object=k", "percent-encoded"),
    ("pkcs11:token=t;object=%zz", "percent-encoded"),
    ("pkcs11:token=t;object=%ff", "not UTF-8"),
    ("pkcs11:token=t;object=k;type=private-key", "type=secret-key"),
    ("pkcs11:token=;object=k", "token label"),
    ("pkcs11:token=" + "x" * 33 + ";object=k", "token label"),
])
def test_parse_uri_rejects_malformed(uri, fragment):
    with pytest.raises(ValueError) as info:
        hsm.parse_uri(uri)
    assert fragment in str(info.value)


def test_parse_uri_never_quotes_a_pin_value():
    with pytest.raises(ValueError) as info:
        hsm.parse_uri(f"pkcs11:token=t;object=k?pin-value={WRONG_PIN}")
    assert WRONG_PIN not in str(info.value)
    assert "pass module= and pin=" in str(info.value)


def test_parse_uri_type_errors():
    with pytest.raises(TypeError):
        hsm.parse_uri(b"pkcs11:token=t;object=k")
    with pytest.raises(TypeError):
        hsm.make_uri("t", 7)


def test_import_shardseal_does_not_import_python_pkcs11():
    code = "import sys, shardseal; sys.exit('pkcs11' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=False).returncode == 0


# -- construction and configuration ---------------------------------------------------------------

def test_module_and_pin_from_the_environment(module_path, kek, monkeypatch):
    monkeypatch.setenv(hsm.MODULE_ENV, module_path)
    monkeypatch.setenv(hsm.PIN_ENV, PIN)
    with hsm.Pkcs11Key(TOKEN_A, "kek-2026") as key:
        assert key.module == module_path
        assert shardseal.decrypt(shardseal.encrypt(b"x", recipients=[kek]), identities=[key]) == b"x"


def test_missing_python_pkcs11_has_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pkcs11", None)  # makes "import pkcs11" fail
    with pytest.raises(ImportError, match=r"pip install 'shardseal\[pkcs11\]'"):
        hsm.Pkcs11Key(TOKEN_A, "kek", module="/usr/lib/softhsm/libsofthsm2.so")


def test_missing_module_is_a_clear_error(monkeypatch):
    softhsm.require()
    monkeypatch.delenv(hsm.MODULE_ENV, raising=False)
    with pytest.raises(ValueError, match=hsm.MODULE_ENV):
        hsm.Pkcs11Key(TOKEN_A, "kek")


def test_bad_arguments(module_path):
    with pytest.raises(TypeError):
        hsm.Pkcs11Key(TOKEN_A, "k", module=module_path, pin=1234)
    with pytest.raises(ValueError, match="empty"):
        hsm.Pkcs11Key(TOKEN_A, "k", module=module_path, pin="")
    with pytest.raises(ValueError, match="token label"):
        hsm.Pkcs11Key("x" * 33, "k", module=module_path)
    with pytest.raises(ValueError, match="1024-byte limit"):
        hsm.Pkcs11Key(TOKEN_A, "k" * 1100, module=module_path)
    with pytest.raises(ValueError, match="unsupported"):
        hsm.Pkcs11Key.from_uri("pkcs11:token=t;object=k;id=%01", module=module_path)


def test_unloadable_module_is_hsm_error(module_path):
    with hsm.Pkcs11Key(TOKEN_A, "kek", module="/nonexistent/libpkcs11.so", pin=PIN) as key:
        with pytest.raises(hsm.HsmError, match="cannot load the PKCS#11 module.*/nonexistent/libpkcs11.so"):
            key.key_attributes()


def test_from_uri(module_path, kek):
    with hsm.Pkcs11Key.from_uri(kek.uri, module=module_path, pin=PIN) as key:
        assert (key.token_label, key.key_label, key.key_id) == (TOKEN_A, "kek-2026", kek.uri)
        assert key.key_ids == (kek.uri,)


# -- the key in the token -------------------------------------------------------------------------

def test_created_kek_is_sensitive_and_never_extractable(kek):
    assert kek.uri == "pkcs11:token=shardseal-a;object=kek-2026"
    assert kek.key_attributes() == {
        "key_type": "AES", "value_len": 32, "token": True, "private": True,
        "sensitive": True, "always_sensitive": True, "extractable": False,
        "never_extractable": True, "wrap": True, "unwrap": True, "encrypt": False, "decrypt": False,
    }


def test_kek_value_cannot_be_read_or_exported(kek, p11):
    with pytest.raises(hsm.HsmError, match="AttributeSensitive"):
        kek._call("reading CKA_VALUE", lambda session, key: key[p11.Attribute.VALUE])
    with pytest.raises(hsm.HsmError, match="KeyUnextractable"):
        kek._call("exporting the KEK", lambda session, key: key.wrap_key(key))


def test_create_kek_refuses_an_existing_label(module_path, kek):
    with pytest.raises(ValueError, match="already holds an object labelled 'kek-2026'"):
        hsm.create_kek(TOKEN_A, "kek-2026", module=module_path, pin=PIN)


# -- round trips ----------------------------------------------------------------------------------

def test_encrypt_decrypt_round_trip(kek):
    blob = shardseal.encrypt(DATA, recipients=[kek], metadata={"shard": 3})
    assert shardseal.decrypt(blob, identities=[kek]) == DATA
    assert shardseal.decrypt(blob, identities=kek) == DATA
    stanza = stanza_of(blob)
    assert stanza.type == _stanzas.PKCS11
    parsed = _stanzas.parse_reference(stanza.body, "pkcs11")
    assert (parsed.provider, parsed.key_ref, len(parsed.wrapped_key)) == ("pkcs11", kek.uri, 40)
    assert kek.stanza_size() == len(stanza.body)
    assert shardseal.encrypted_size(len(DATA), metadata={"shard": 3}, recipients=[kek]) == len(blob)
    assert kek.uri in shardseal.inspect(blob).stanzas[0].key_id


def test_file_round_trips(kek, tmp_path):
    source, sealed, opened = tmp_path / "plain.bin", tmp_path / "data.sseal", tmp_path / "out.bin"
    source.write_bytes(DATA)
    assert shardseal.encrypt_file(source, sealed, recipients=[kek]) == len(DATA)
    assert shardseal.decrypt_file(sealed, opened, identities=[kek]) == len(DATA)
    assert opened.read_bytes() == DATA
    streamed = tmp_path / "stream.sseal"
    with shardseal.open(streamed, "wb", recipients=[kek]) as writer:
        writer.write(DATA)
    with shardseal.open(streamed, "rb", identities=[kek]) as reader:
        reader.seek(20000)
        assert reader.read(100) == DATA[20000:20100]


def test_each_of_two_hsm_keys_opens_the_file_alone(kek, kek_b):
    blob = shardseal.encrypt(DATA, recipients=[kek, kek_b])
    assert shardseal.decrypt(blob, identities=[kek]) == DATA
    assert shardseal.decrypt(blob, identities=[kek_b]) == DATA


def test_rfc3394_interop_with_cryptography(kek, p11):
    """The stanza's wrapped key is plain RFC 3394, so any implementation that holds the KEK
    (here, a known session key) opens it, and the token opens what such code wraps."""
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

    known = bytes(range(100, 132))
    kek._call("import", lambda session, _: session_key(p11, session, known, "known-kek"))
    with hsm.Pkcs11Key(TOKEN_A, "known-kek", module=kek.module, pin=PIN) as key:
        blob = shardseal.encrypt(DATA, recipients=[key])
        wrapped = _stanzas.parse_reference(stanza_of(blob).body, "pkcs11").wrapped_key
        file_key = aes_key_unwrap(known, wrapped)
        assert len(file_key) == 32
        body = _stanzas.reference_body("pkcs11", key.uri, aes_key_wrap(known, file_key))
        assert key.unwrap(body, context_of(blob)) == file_key


# -- failures -------------------------------------------------------------------------------------

def test_wrong_hsm_key_is_key_not_found_naming_the_uri(kek, kek_b):
    blob = shardseal.encrypt(DATA, recipients=[kek])
    assert kek_b.unwrap(stanza_of(blob).body, context_of(blob)) is None
    with pytest.raises(KeyNotFoundError) as info:
        shardseal.decrypt(blob, identities=[kek_b])
    assert kek.uri in str(info.value)
    assert any(kek.uri in key_id for key_id in info.value.key_ids)


def test_missing_key_or_token(module_path, kek):
    context = _envelope.WrapContext(1, b"")
    with hsm.Pkcs11Key(TOKEN_A, "no-such-key", module=module_path, pin=PIN) as key:
        with pytest.raises(KeyNotFoundError, match="no AES secret key labelled 'no-such-key'") as info:
            key.wrap(bytes(32), context)
        assert info.value.key_ids == (key.uri,)
    with hsm.Pkcs11Key("no-such-token", "kek", module=module_path, pin=PIN) as key:
        with pytest.raises(KeyNotFoundError, match="token 'no-such-token' not found") as info:
            key.wrap(bytes(32), context)
        assert info.value.key_ids == ("pkcs11:token=no-such-token;object=kek",)


def test_key_deleted_after_encryption(kek, p11):
    kek._call("import", lambda session, _: session_key(p11, session, os.urandom(32), "short-lived"))
    with hsm.Pkcs11Key(TOKEN_A, "short-lived", module=kek.module, pin=PIN) as key:
        blob = shardseal.encrypt(DATA, recipients=[key])  # caches the key's handle
        kek._call("delete", lambda session, _: session.get_key(label="short-lived").destroy())
        # The cached handle is stale: one fresh lookup, which finds nothing.
        with pytest.raises(KeyNotFoundError) as info:
            shardseal.decrypt(blob, identities=[key])
        assert key.uri in str(info.value)


def test_tampered_wrapped_key_is_authentication_error(kek, caplog):
    blob = bytearray(shardseal.encrypt(DATA, recipients=[kek]))
    wrapped_at = blob.index(kek.uri.encode()) + len(kek.uri)
    blob[wrapped_at + 7] ^= 0x01
    caplog.set_level(logging.INFO, logger="shardseal.audit")
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(bytes(blob), identities=[kek])
    (event,) = [r.shardseal for r in caplog.records if r.shardseal["event"] == "unwrap_failed"]
    assert event["error"] == "AuthenticationError"


def test_stanza_under_another_key_of_the_same_name_is_authentication_error(kek):
    blob = shardseal.encrypt(DATA, recipients=[kek])
    body = _stanzas.reference_body("pkcs11", kek.uri, os.urandom(40))
    with pytest.raises(AuthenticationError):
        kek.unwrap(body, context_of(blob))


def test_malformed_stanzas_are_format_errors(kek):
    context = _envelope.WrapContext(1, b"")
    for key_ref, wrapped in ((kek.uri, bytes(32)), ("pkcs11:token=a;bogus=1", bytes(40)),
                             ("token=a;object=b", bytes(40))):
        with pytest.raises(FormatError, match="malformed pkcs11 key stanza"):
            kek.unwrap(_stanzas.reference_body("pkcs11", key_ref, wrapped), context)
    with pytest.raises(FormatError):
        kek.unwrap(_stanzas.reference_body("kms", kek.uri, bytes(40)), context)


def test_wrap_checks_the_file_key(kek):
    with pytest.raises(ValueError, match="32 bytes"):
        kek.wrap(bytes(31), _envelope.WrapContext(1, b""))


def test_wrong_pin_missing_pin_and_mismatched_pin(module_path, monkeypatch):
    monkeypatch.delenv(hsm.PIN_ENV, raising=False)
    hsm.create_kek(TOKEN_LOGIN, "kek-login", module=module_path, pin=PIN).close()  # logs out
    with hsm.Pkcs11Key(TOKEN_LOGIN, "kek-login", module=module_path, pin=WRONG_PIN) as key:
        with pytest.raises(hsm.Pkcs11LoginError, match="PIN is incorrect") as info:
            key.key_attributes()
        assert isinstance(info.value, PermissionError) and isinstance(info.value, ShardsealError)
        assert TOKEN_LOGIN in str(info.value)
        for text in (str(info.value), repr(info.value), repr(key), str(key)):
            assert WRONG_PIN not in text
    with hsm.Pkcs11Key(TOKEN_LOGIN, "kek-login", module=module_path) as key:  # no PIN, no login
        with pytest.raises(KeyNotFoundError, match="no PIN was given"):
            key.key_attributes()
    with hsm.Pkcs11Key(TOKEN_LOGIN, "kek-login", module=module_path, pin=PIN) as good, \
            hsm.Pkcs11Key(TOKEN_LOGIN, "kek-login", module=module_path, pin=WRONG_PIN) as bad:
        assert good.key_attributes()["sensitive"]
        # PKCS#11 shares one login per token and process; a key with another PIN must not ride on it.
        with pytest.raises(hsm.Pkcs11LoginError, match="another PIN"):
            bad.key_attributes()


# -- processes, threads, lifecycle ----------------------------------------------------------------

def _decrypt_in_child(blob, key, results):
    try:
        inherited = key._shared
        plaintext = shardseal.decrypt(blob, identities=[key])
        # The child opened a session of its own instead of using the parent's.
        fresh = key._shared is not inherited and key._shared.pid == os.getpid()
        results.put(("ok", plaintext, fresh))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", repr(exc)))


def test_forked_child_uses_the_same_key_object(kek):
    blob = shardseal.encrypt(DATA, recipients=[kek])  # the parent's session is open
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_decrypt_in_child, args=(blob, kek, results))
    child.start()
    outcome = results.get(timeout=30)
    child.join(timeout=30)
    assert outcome == ("ok", DATA, True)
    assert child.exitcode == 0
    # The child's re-initialisation left the parent's session alone.
    assert shardseal.decrypt(shardseal.encrypt(DATA, recipients=[kek]), identities=[kek]) == DATA


def test_threads_share_one_key(kek):
    errors = []

    def work():
        try:
            for _ in range(10):
                blob = shardseal.encrypt(b"abc", recipients=[kek], threads=1)
                assert shardseal.decrypt(blob, identities=[kek], threads=1) == b"abc"
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


def test_a_session_closed_underneath_is_reopened(kek):
    blob = shardseal.encrypt(DATA, recipients=[kek])
    stale = kek._shared
    stale.session.close()  # as if the token had dropped the session (it also logs out)
    assert shardseal.decrypt(blob, identities=[kek]) == DATA
    assert kek._shared is not stale and stale.dead


def test_keys_do_not_pickle_or_copy(kek):
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(kek)
    with pytest.raises(TypeError, match="not picklable"):
        copy.copy(kek)


def test_close_wipes_the_pin_and_refuses_further_use(module_path, kek):
    key = hsm.Pkcs11Key(TOKEN_A, "kek-2026", module=module_path, pin=PIN)
    pin_buffer = key._pin
    assert key.key_attributes()["unwrap"]
    key.close()
    assert pin_buffer == bytearray(len(PIN))
    assert repr(key) == "Pkcs11Key('pkcs11:token=shardseal-a;object=kek-2026', closed)"
    with pytest.raises(ValueError, match="closed"):
        key.wrap(bytes(32), _envelope.WrapContext(1, b""))
    key.close()
    assert kek.key_attributes()["unwrap"]  # the shared session outlived the closed key


def test_no_pin_in_repr_or_audit_log(module_path, kek, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="shardseal.audit")
    with hsm.Pkcs11Key(TOKEN_A, "kek-2026", module=module_path, pin=PIN) as key:
        assert repr(key) == "Pkcs11Key('pkcs11:token=shardseal-a;object=kek-2026')"
        blob = shardseal.encrypt(DATA, recipients=[key])
        shardseal.decrypt(blob, identities=[key])
        with pytest.raises(KeyNotFoundError):
            shardseal.decrypt(shardseal.encrypt(DATA, recipients=[key]),
                              identities=[hsm.Pkcs11Key(TOKEN_A, "other", module=module_path, pin=PIN)])
    events = [r.shardseal for r in caplog.records if r.name == "shardseal.audit"]
    assert {e["event"] for e in events} >= {"wrap", "unwrap", "key_not_found"}
    assert any(e["event"] == "wrap" and e["key_id"] == kek.uri for e in events)
    logged = caplog.text + json.dumps(events, default=str)
    assert PIN not in logged and PIN.encode().hex() not in logged


# -- Wycheproof key-wrap vectors through the token ------------------------------------------------

@pytest.mark.parametrize(("file_name", "mechanism"), [
    ("aes_wrap_test.json", "AES_KEY_WRAP"),  # RFC 3394, the mechanism shardseal uses
    ("aes_kwp_test.json", "AES_KEY_WRAP_PAD"),  # RFC 5649, checked to document the choice
])
def test_wycheproof_unwrap_inside_the_token(kek, p11, file_name, mechanism):
    groups = json.loads((WYCHEPROOF / file_name).read_text())["testGroups"]
    vectors = [vector for group in groups for vector in group["tests"]]

    def run(session, _):
        failures, opened = [], 0
        for vector in vectors:
            outcome = _unwrap_vector(p11, session, vector, getattr(p11.Mechanism, mechanism))
            opened += outcome != "invalid"
            if vector["result"] == "acceptable" and outcome in ("invalid", bytes.fromhex(vector["msg"])):
                continue
            expected = bytes.fromhex(vector["msg"]) if vector["result"] == "valid" else "invalid"
            if outcome != expected:
                failures.append(vector["tcId"])
        return failures, opened

    failures, opened = kek._call("wycheproof", run)
    assert failures == []
    assert opened >= sum(vector["result"] == "valid" for vector in vectors) > 30


def _unwrap_vector(p11, session, vector, mechanism):
    key = session_key(p11, session, bytes.fromhex(vector["key"]), "wycheproof")
    try:
        return hsm._unwrap_in_token(session, key, bytes.fromhex(vector["ct"]), mechanism=mechanism,
                                    key_type=p11.KeyType.GENERIC_SECRET)
    except AuthenticationError:
        return "invalid"
    finally:
        key.destroy()


# -- the SoftHSM2 helper ----------------------------------------------------------------------------

def test_missing_softhsm_skips_or_fails_when_required(monkeypatch):
    monkeypatch.setattr(softhsm, "find_module", lambda: None)
    monkeypatch.delenv(softhsm.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        softhsm.require()
    monkeypatch.setenv(softhsm.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="SHARDSEAL_REQUIRE_HSM=1 requires"):
        softhsm.require()


# -- key ids and rotation ---------------------------------------------------------------------------

def test_the_stanza_key_id_is_the_uri():
    uri = "pkcs11:token=t;object=k"
    stanza = _container.Stanza(_stanzas.PKCS11, _stanzas.reference_body("pkcs11", uri, bytes(40)))
    assert _stanzas.key_id(stanza) == uri


def test_rotation_matches_stanzas_to_hsm_keys(kek, kek_b, tmp_path):
    from shardseal import rotation as rotate

    path = tmp_path / "shard.sseal"
    path.write_bytes(shardseal.encrypt(DATA, recipients=[kek]))
    assert [s.key_id for s in shardseal.inspect(path.read_bytes()).stanzas] == [kek.uri]
    rotate.rotate(path, identities=[kek], add=[kek])  # already there: not added twice
    assert len(shardseal.inspect(path.read_bytes()).stanzas) == 1
    rotate.rotate(path, identities=[kek], add=[kek_b], remove=[kek])
    assert [s.key_id for s in shardseal.inspect(path.read_bytes()).stanzas] == [kek_b.uri]
    assert shardseal.decrypt(path.read_bytes(), identities=[kek_b]) == DATA
