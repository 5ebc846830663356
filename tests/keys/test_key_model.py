"""Issue 12, item 1: one key model. One registry parses recipient and identity strings for the
library and the command line; every type has from_string/to_string; old names warn; the
functions that take identities take identity strings and references too."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import pytest

import shardseal
from shardseal import keyfile, keyref, kms, passphrase, pkcs11, x25519
from shardseal.errors import KeyFileError, KeyLoadError, KeySpecError
from shardseal.keys import registry, specs
import shardseal.keyring as keyring

from ..cli_helpers import child_env

KEY = bytes(range(32))


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """An AWS configuration that builds an AwsKms client without any network access."""
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture
def pkcs11_env(monkeypatch):
    """A module path in the environment: nothing touches the token until a key is used."""
    pytest.importorskip("pkcs11")
    monkeypatch.setenv(pkcs11.MODULE_ENV, "/nonexistent/libsofthsm2.so")


@pytest.fixture
def keys_folder(tmp_path):
    """A key file, a keyring file (one KEK "kek-1") and an X25519 identity file."""
    keyfile.write_key_file(tmp_path / "team.key", KEY)
    ring = keyring.Keyring.create(tmp_path / "ring.json")
    ring.add("kek-1")
    identity = x25519.X25519Identity.generate()
    x25519.write_identity_file(tmp_path / "me.id", identity)
    return tmp_path, identity


# ---- from_string(to_string(x)) for every type ------------------------------------------------


def test_x25519_round_trips():
    identity = x25519.X25519Identity.generate()
    assert x25519.X25519Recipient.from_string(identity.recipient.to_string()) == identity.recipient
    again = x25519.X25519Identity.from_string(identity.to_string())
    assert again.key_ids == identity.key_ids
    assert registry.parse_recipient(identity.recipient.to_string()) == identity.recipient
    assert registry.parse_identity(identity.to_string()).key_ids == identity.key_ids
    # The secret is in to_string only, never in repr or str.
    assert identity.to_string() not in repr(identity) + str(identity)


def test_keyring_round_trips(keys_folder):
    folder, _ = keys_folder
    ring = keyring.Keyring.load(folder / "ring.json")
    recipient = ring.recipient("kek-1")
    text = recipient.to_string()
    assert text == f"keyring:{folder / 'ring.json'}#kek-1"
    again = keyring.KeyringRecipient.from_string(text)
    assert (again.key_id, again.name) == (recipient.key_id, recipient.name)
    assert registry.parse_recipient(text).key_id == recipient.key_id
    assert ring.to_string() == f"keyring:{folder / 'ring.json'}"
    loaded = keyring.KeyringIdentity.from_string(ring.to_string())
    assert isinstance(loaded, keyring.Keyring) and loaded.key_ids == ring.key_ids
    assert registry.parse_identity(ring.to_string()).key_ids == ring.key_ids
    with pytest.raises(ValueError, match="whole keyring"):
        keyring.KeyringIdentity.from_string(text)  # #NAME names a recipient
    assert keyring.KeyringIdentity is keyring.Keyring


def test_kms_round_trips(aws_env):
    arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    recipient = kms.KmsRecipient.from_string(f"aws-kms:{arn}")
    assert recipient.to_string() == f"aws-kms:{arn}"
    assert kms.KmsRecipient.from_string(recipient.to_string()).key_id == recipient.key_id
    assert isinstance(registry.parse_recipient(f"aws-kms:{arn}"), kms.KmsRecipient)
    for text in ("aws-kms", f"aws-kms:{arn}"):
        identity = kms.KmsIdentity.from_string(text)
        assert identity.to_string() == text
        assert kms.KmsIdentity.from_string(identity.to_string()).key_ids == identity.key_ids
        assert registry.parse_identity(text).key_ids == identity.key_ids
    with pytest.raises(ValueError, match="no string form"):
        kms.KmsIdentity(kms.AwsKms(), allowed_accounts=["111122223333"]).to_string()


def test_pkcs11_round_trips(pkcs11_env):
    uri = "pkcs11:token=ml-keys;object=kek-2026"
    key = pkcs11.Pkcs11Recipient.from_string(uri)
    assert key.to_string() == uri and "pin" not in key.to_string()
    assert pkcs11.Pkcs11Identity.from_string(key.to_string()).key_ids == key.key_ids
    assert isinstance(registry.parse_recipient(uri), pkcs11.Pkcs11Recipient)
    assert isinstance(registry.parse_identity(uri), pkcs11.Pkcs11Identity)
    assert pkcs11.Pkcs11Identity is pkcs11.Pkcs11Recipient


def test_key_reference_round_trips(tmp_path):
    ref = keyref.KeyFile(tmp_path / "team.key")
    assert ref.to_string() == f"keyfile:{tmp_path / 'team.key'}"
    assert keyref.KeyFile.from_string(ref.to_string()) == ref
    assert keyref.parse_key_ref(ref.to_string()) == ref
    env = keyref.EnvKey("MY_KEY")
    assert env.to_string() == "env:MY_KEY"
    assert keyref.EnvKey.from_string(env.to_string()) == env == keyref.parse_key_ref("env:MY_KEY")
    with pytest.raises(ValueError, match="not a key reference string"):
        keyref.parse_key_ref(KEY.hex())
    with pytest.raises(TypeError, match="no string form") as info:
        keyref.RawKey(KEY).to_string()
    assert KEY.hex() not in str(info.value)


def test_identity_reference_round_trips_and_pickles(keys_folder, monkeypatch):
    folder, identity = keys_folder
    monkeypatch.chdir(folder)
    for text, absolute in [("me.id", str(folder / "me.id")),
                           ("keyring:ring.json", f"keyring:{folder / 'ring.json'}"),
                           ("aws-kms", "aws-kms"),
                           ("pkcs11:token=a;object=b", "pkcs11:token=a;object=b")]:
        ref = keyref.IdentityRef(text)
        assert ref.to_string() == absolute  # a worker with another working directory finds it
        assert keyref.IdentityRef.from_string(ref.to_string()) == ref
        assert pickle.loads(pickle.dumps(ref)) == ref
    assert keyref.IdentityRef("me.id").load().key_ids == identity.key_ids
    with pytest.raises(ValueError, match="secret itself") as info:
        keyref.IdentityRef(identity.to_string())
    assert identity.to_string() not in str(info.value)


def test_passphrase_names_both_roles_and_has_no_string_form():
    assert passphrase.PassphraseRecipient is passphrase.PassphraseIdentity is passphrase.Passphrase
    assert not hasattr(passphrase.Passphrase, "to_string")


# ---- the registry ------------------------------------------------------------------------------


def test_identity_files_are_told_apart_by_content(keys_folder):
    folder, identity = keys_folder
    direct = registry.parse_identity(str(folder / "team.key"))
    assert isinstance(direct, shardseal.keys.envelope.DirectKey)
    assert isinstance(registry.parse_identity(str(folder / "ring.json")), keyring.KeyringIdentity)
    assert registry.parse_identity(str(folder / "me.id")).key_ids == identity.key_ids


def test_registry_errors():
    with pytest.raises(ValueError, match="secret key, not a recipient"):
        registry.parse_recipient(x25519.X25519Identity.generate().to_string())
    with pytest.raises(ValueError):
        registry.parse_recipient("nothing-known")
    with pytest.raises(TypeError):
        registry.parse_identity(b"bytes")
    with pytest.raises(ValueError, match="key file's line"):
        registry.parse_identity(keyfile.format_key_file(KEY).splitlines()[-1])
    with pytest.raises(ValueError, match="already registered"):
        registry.register_recipient_type("ssealx1", "x:Y")


def test_registered_type_is_parsed(monkeypatch):
    monkeypatch.setattr(registry, "_RECIPIENT_TYPES", dict(registry._RECIPIENT_TYPES))
    registry.register_recipient_type("test-x25519:", "tests.keys.test_key_model:_PrefixedX25519")
    identity = x25519.X25519Identity.generate()
    parsed = registry.parse_recipient("test-x25519:" + identity.recipient.to_string())
    assert parsed == identity.recipient


class _PrefixedX25519:
    @staticmethod
    def from_string(text: str):
        return x25519.X25519Recipient.from_string(text[len("test-x25519:"):])


def test_import_loads_no_key_type():
    code = ("import sys, shardseal, shardseal.keyref\n"
            "loaded = [m for m in ('x25519', 'keyring', 'kms', 'pkcs11', 'passphrase')\n"
            "          if 'shardseal.keys.' + m in sys.modules]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], env=child_env(), check=True, timeout=60)


# ---- the command line and the library parse the same strings ---------------------------------


RECIPIENT_FORMS = ["x25519", "keyring:PATH", "keyring:PATH#NAME"]
IDENTITY_FORMS = ["key file", "keyring file", "x25519 file", "keyring:PATH", "aws-kms", "aws-kms:KEY"]


def _recipient_string(form, folder, identity):
    return {"x25519": identity.recipient.to_string(),
            "keyring:PATH": f"keyring:{folder / 'ring.json'}",
            "keyring:PATH#NAME": f"keyring:{folder / 'ring.json'}#kek-1"}[form]


def _identity_string(form, folder):
    return {"key file": str(folder / "team.key"), "keyring file": str(folder / "ring.json"),
            "x25519 file": str(folder / "me.id"), "keyring:PATH": f"keyring:{folder / 'ring.json'}",
            "aws-kms": "aws-kms", "aws-kms:KEY": "aws-kms:alias/training"}[form]


@pytest.mark.parametrize("form", RECIPIENT_FORMS)
def test_cli_and_library_parse_recipients_identically(form, keys_folder):
    folder, identity = keys_folder
    text = _recipient_string(form, folder, identity)
    library, cli = registry.parse_recipient(text), specs.parse_recipient(text)
    assert type(library) is type(cli) and library.key_id == cli.key_id
    assert library.to_string() == cli.to_string()


@pytest.mark.parametrize("form", IDENTITY_FORMS)
def test_cli_and_library_parse_identities_identically(form, keys_folder, aws_env):
    folder, _ = keys_folder
    text = _identity_string(form, folder)
    library, cli = registry.parse_identity(text), specs.load_identity(text)
    assert type(library) is type(cli) and library.key_ids == cli.key_ids


@pytest.mark.parametrize("text", ["nothing-known", "keyring:", "aws-kms:"])
def test_cli_and_library_refuse_the_same_recipient_strings(text):
    with pytest.raises(ValueError):
        registry.parse_recipient(text)
    with pytest.raises((KeySpecError, KeyLoadError)):
        specs.parse_recipient(text)


def test_cli_refuses_secrets_that_the_library_takes():
    identity = x25519.X25519Identity.generate()
    assert registry.parse_identity(identity.to_string()).key_ids == identity.key_ids
    with pytest.raises(KeyLoadError, match="not a key") as info:
        specs.load_identity(identity.to_string())
    assert identity.to_string() not in str(info.value)


# ---- old names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("module, old, new", [
    (kms, "KmsKey", "KmsRecipient"), (shardseal.keys.kms, "KmsKey", "KmsRecipient"),
    (pkcs11, "Pkcs11Key", "Pkcs11Recipient"), (shardseal.keys.pkcs11, "Pkcs11Key", "Pkcs11Recipient"),
])
def test_old_names_warn_and_are_the_same_class(module, old, new):
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*use {new}") as record:
        cls = getattr(module, old)
    assert cls is getattr(module, new)
    assert record[0].filename == __file__  # the warning names the caller's line


def test_old_name_imports_warn_and_isinstance_works(aws_env):
    with pytest.warns(DeprecationWarning):
        from shardseal.kms import KmsKey
    recipient = kms.KmsRecipient.from_string("aws-kms:alias/x")
    assert isinstance(recipient, KmsKey)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec("from shardseal.kms import *; from shardseal.pkcs11 import *", {})  # no old names


def test_old_overwrite_spelling_warns(tmp_path):
    keyring.Keyring.create(tmp_path / "ring.json")
    with pytest.warns(DeprecationWarning, match="use force="):
        keyring.Keyring.create(tmp_path / "ring.json", overwrite=True)
    keyring.Keyring.create(tmp_path / "ring.json", force=True)
    identity = x25519.X25519Identity.generate()
    x25519.write_identity_file(tmp_path / "me.id", identity)
    with pytest.raises(FileExistsError):
        x25519.write_identity_file(tmp_path / "me.id", identity)
    with pytest.warns(DeprecationWarning, match="use force="):
        x25519.write_identity_file(tmp_path / "me.id", identity, overwrite=True)
    x25519.write_identity_file(tmp_path / "me.id", identity, force=True)
    keyfile.write_key_file(tmp_path / "k.key", KEY)
    keyfile.write_key_file(tmp_path / "k.key", KEY, force=True)


# ---- identities= takes strings and references everywhere -----------------------------------


def test_functions_take_identity_strings_and_references(keys_folder, tmp_path):
    folder, identity = keys_folder
    ring_string = f"keyring:{folder / 'ring.json'}"
    blob = shardseal.encrypt(b"data", recipients=[f"{ring_string}#kek-1", identity.recipient.to_string()])
    for identities in (ring_string, [ring_string], [str(folder / "me.id")],
                       [keyref.IdentityRef(folder / "ring.json")], keyref.IdentityRef(folder / "me.id")):
        assert shardseal.decrypt(blob, identities=identities) == b"data"
    (tmp_path / "x.sseal").write_bytes(blob)
    with shardseal.open(tmp_path / "x.sseal", "rb", identities=[str(folder / "me.id")]) as f:
        assert f.read() == b"data"
    direct = shardseal.encrypt(b"direct", KEY)
    assert shardseal.decrypt(direct, identities=[str(folder / "team.key")]) == b"direct"
    with pytest.raises(FileNotFoundError):
        shardseal.decrypt(blob, identities=[str(folder / "missing.id")])
    (tmp_path / "not.id").write_bytes(b"hello")
    (tmp_path / "not.id").chmod(0o600)
    with pytest.raises(KeyFileError):
        shardseal.decrypt(blob, identities=[str(tmp_path / "not.id")])  # not an identity file


def test_cli_takes_the_library_identity_strings(keys_folder):
    """-i keyring:PATH (a registry form the command line did not know before) works end to end."""
    from ..cli_helpers import assert_ok, run

    folder, _ = keys_folder
    ring = f"keyring:{folder / 'ring.json'}"
    (folder / "data.bin").write_bytes(b"cli data")
    assert_ok(run("encrypt", "-r", f"{ring}#kek-1", "data.bin", cwd=folder))
    assert_ok(run("decrypt", "-i", ring, "-o", "out", "data.bin.sseal", cwd=folder))
    assert (folder / "out").read_bytes() == b"cli data"
    assert shardseal.decrypt((folder / "data.bin.sseal").read_bytes(), identities=ring) == b"cli data"
