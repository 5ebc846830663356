"""shardseal.parquet: Parquet Modular Encryption with real pyarrow, its keys wrapped for shardseal
recipients (keyring, X25519, PKCS#11 on SoftHSM2, AWS KMS on moto), tampering, wrong identities
and master key rotation."""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyarrow.parquet.encryption")

import shardseal
import shardseal.keyring
import shardseal.parquet as sp
import shardseal.x25519
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError, KeySpecError
from tests import softhsm
from tests.cli_helpers import PACKAGE_ROOT

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table():
    n = 3000
    return pa.table({"id": pa.array(range(n), pa.int64()),
                     "email": [f"user{i}@example.org" for i in range(n)],
                     "score": pa.array([i * 0.5 for i in range(n)], pa.float64())})


@pytest.fixture
def ring(tmp_path):
    """A keyring with KEKs "footer" and "pii"."""
    keyring = shardseal.keyring.Keyring.create(tmp_path / "ring.json")
    keyring.add("footer")
    keyring.add("pii")
    keyring.save()
    return keyring


def secrets_of(ring, *identities) -> list:
    """Every string form of the key material a message must never show."""
    import json

    forms = []
    for entry in json.loads(Path(ring.path).read_text())["keys"]:  # the KEKs, base64 in the file
        forms += [entry["key"], base64.b64decode(entry["key"]).hex()]
    for identity in identities:
        forms.append(identity.to_string())
    return forms


def wrapped_containers(path: Path) -> list:
    """The shardseal containers (wrapped KEKs or DEKs) in a file's external key material."""
    import json

    material = json.loads((path.parent / f"{sp.KEY_MATERIAL_PREFIX}{path.name}.json").read_text())
    result = []
    for entry in material.values():
        fields = json.loads(entry)
        if "masterKeyID" in fields:
            result.append(base64.b64decode(fields.get("wrappedKEK") or fields["wrappedDEK"]))
    return result


# -- round trips per recipient type -----------------------------------------------------------------

def test_x25519_round_trip(tmp_path, table):
    identity = shardseal.x25519.X25519Identity.generate()
    recipient = identity.recipient.to_string()
    path = tmp_path / "x.parquet"
    sp.write_table(table, path, footer_key=recipient, column_keys={recipient: ["email"]})
    assert sp.read_table(path, identities=[identity]).equals(table)
    assert sp.read_table(path, identities=identity, columns=["email"]).column("email").equals(table.column("email"))
    with pytest.raises(OSError, match="no decryption found"):  # the footer is encrypted
        pq.read_table(path)


def test_keyring_round_trip(tmp_path, table, ring):
    path = tmp_path / "k.parquet"
    footer, pii = f"keyring:{ring.path}#footer", f"keyring:{ring.path}#pii"
    sp.write_table(table, path, footer_key=footer, column_keys={pii: ["email", "score"]})
    assert sp.read_table(path, identities=[ring]).equals(table)
    # An identity string: the keyring file's path.
    assert sp.read_table(path, identities=[str(ring.path)]).equals(table)


def test_aliases_with_several_recipients_either_identity_reads(tmp_path, table, ring):
    alice, bob = shardseal.x25519.X25519Identity.generate(), shardseal.x25519.X25519Identity.generate()
    master_keys = {"footer": [alice.recipient, f"keyring:{ring.path}#footer"],
                   "pii": [alice.recipient, bob.recipient.to_string()]}
    path = tmp_path / "a.parquet"
    sp.write_table(table, path, footer_key="footer", column_keys={"pii": ["email"]}, master_keys=master_keys)
    assert sp.read_table(path, identities=[alice]).equals(table)
    # bob has the pii key but not the footer key.
    with pytest.raises(KeyNotFoundError, match="'footer'"):
        sp.read_table(path, identities=[bob])
    # The keyring opens the footer and the plaintext column, not the pii column.
    assert sp.read_table(path, identities=[ring], columns=["id", "score"]).num_rows == table.num_rows
    with pytest.raises(KeyNotFoundError, match="'pii'"):
        sp.read_table(path, identities=[ring], columns=["email"])


def test_aws_kms_round_trip(tmp_path, table, monkeypatch):
    pytest.importorskip("moto")
    from shardseal.kms import AwsKms, KmsIdentity, KmsKey
    from tests.kms_server import KmsServer

    server = KmsServer().start()
    try:
        provider = AwsKms(server.client())
        key_id = server.create_key("parquet")["KeyId"]
        path = tmp_path / "kms.parquet"
        sp.write_table(table, path, footer_key="footer", master_keys={"footer": KmsKey(provider, key_id)})
        assert sp.read_table(path, identities=[KmsIdentity(provider)]).equals(table)
        other = server.create_key("other")["KeyId"]
        with pytest.raises(KeyNotFoundError):
            sp.read_table(path, identities=[KmsIdentity(provider, key_ids=[other])])
        # The string forms (aws-kms:KEY as the master key, aws-kms as the identity), with the
        # AWS settings of a user whose configuration points at the test server.
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN",
                     "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.endpoint_url)
        by_string = tmp_path / "kms-string.parquet"
        sp.write_table(table, by_string, footer_key=f"aws-kms:{key_id}", column_keys={f"aws-kms:{key_id}": ["email"]})
        assert sp.read_table(by_string, identities=["aws-kms"]).equals(table)
        assert sp.read_table(by_string, identities=[f"aws-kms:{key_id}"]).equals(table)
        with pytest.raises(KeyNotFoundError):
            sp.read_table(by_string, identities=[f"aws-kms:{other}"])
    finally:
        server.stop()


PKCS11_SCRIPT = """
import os, sys
import pyarrow as pa
import shardseal.parquet as sp
from shardseal.pkcs11 import create_kek
from shardseal.errors import KeyNotFoundError
module, pin, folder = sys.argv[1:4]
create_kek("parquet", "footer-kek", module=module, pin=pin).close()
create_kek("parquet", "other-kek", module=module, pin=pin).close()
os.environ["SHARDSEAL_PKCS11_MODULE"], os.environ["SHARDSEAL_PKCS11_PIN"] = module, pin
table = pa.table({"a": list(range(100)), "b": [str(i) for i in range(100)]})
path = os.path.join(folder, "hsm.parquet")
uri = "pkcs11:token=parquet;object=footer-kek"
sp.write_table(table, path, footer_key=uri, column_keys={uri: ["b"]})
assert sp.read_table(path, identities=[uri]).equals(table)
try:
    sp.read_table(path, identities=["pkcs11:token=parquet;object=other-kek"])
except KeyNotFoundError as exc:
    assert pin not in str(exc), "the PIN in a message"
    print("wrong key:", type(exc).__name__)
print("ok")
"""


def test_pkcs11_round_trip(tmp_path):
    # A process of its own: SoftHSM2 reads its token list once per process, at C_Initialize.
    module = softhsm.require()
    store = softhsm.SoftHsm(tmp_path / "softhsm", module)
    try:
        store.init_token("parquet", "1234-5678", "8765-4321")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, str(ROOT)]))
        proc = subprocess.run([sys.executable, "-c", PKCS11_SCRIPT, module, "1234-5678", str(tmp_path)],
                              env=env, capture_output=True, text=True, timeout=120)
    finally:
        store.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["wrong", "key:", "KeyNotFoundError", "ok"]


# -- failures --------------------------------------------------------------------------------------

def test_wrong_identity_is_key_not_found_without_key_material(tmp_path, table, ring):
    owner, stranger = shardseal.x25519.X25519Identity.generate(), shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "w.parquet"
    sp.write_table(table, path, footer_key=f"keyring:{ring.path}#footer",
                   column_keys={owner.recipient.to_string(): ["email"]})
    with pytest.raises(KeyNotFoundError) as caught:
        sp.read_table(path, identities=[stranger])
    assert "keyring:" in str(caught.value) and caught.value.key_ids
    with pytest.raises(KeyNotFoundError) as caught_column:
        sp.read_table(path, identities=[ring, stranger])
    assert owner.recipient.to_string() in str(caught_column.value)
    for exc in (caught.value, caught_column.value):
        text = f"{exc} {exc!r} {exc.__cause__!r} {exc.__context__!r}"
        for secret in secrets_of(ring, owner, stranger):
            assert secret not in text
    with pytest.raises(KeyNotFoundError):
        sp.read_table(path, identities=[])


def test_key_wrapped_for_another_master_key_is_rejected():
    identity = shardseal.x25519.X25519Identity.generate()
    client = sp.ShardsealKmsClient(master_keys={"a": identity.recipient, "b": identity.recipient},
                                   identities=[identity])
    wrapped = client.wrap_key(os.urandom(32), "a")
    assert len(client.unwrap_key(wrapped, "a")) == 32
    with pytest.raises(AuthenticationError, match="another master key"):
        client.unwrap_key(wrapped, "b")
    with pytest.raises(FormatError):
        client.unwrap_key("not base64!", "a")
    with pytest.raises(FormatError):
        client.unwrap_key(base64.b64encode(b"plain bytes").decode(), "a")
    tampered = bytearray(base64.b64decode(wrapped))
    tampered[-1] ^= 1
    with pytest.raises(AuthenticationError):
        client.unwrap_key(base64.b64encode(bytes(tampered)).decode(), "a")


def column_chunk_range(path: Path, identities, column: str):
    meta = pq.ParquetFile(path, decryption_properties=sp.decryption_properties(path, identities=identities)).metadata
    chunk = meta.row_group(0).column(meta.schema.names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    return start, chunk.total_compressed_size


@pytest.mark.parametrize("where", ["column", "footer"])
def test_tampered_file_is_parquet_authentication_error(tmp_path, table, where):
    identity = shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "t.parquet"
    sp.write_table(table, path, footer_key="f", column_keys={"c": ["email"]},
                   master_keys={"f": identity.recipient, "c": identity.recipient})
    data = bytearray(path.read_bytes())
    if where == "column":
        start, size = column_chunk_range(path, identity, "email")
        data[start + size // 2] ^= 0x01
    else:
        footer_size = int.from_bytes(data[-8:-4], "little")
        data[len(data) - 8 - footer_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(sp.ParquetAuthenticationError) as caught:
        sp.read_table(path, identities=[identity])
    assert isinstance(caught.value, AuthenticationError) and isinstance(caught.value, OSError)
    assert str(path) in str(caught.value) and "pyarrow:" in str(caught.value)


def test_tampered_plaintext_footer_fails_its_signature(tmp_path, table):
    identity = shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "s.parquet"
    sp.write_table(table, path, footer_key="f", column_keys={"f": ["email"]}, master_keys={"f": identity.recipient},
                   plaintext_footer=True)
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    name = data.index(b"score", footer_start)  # a column name in the clear schema
    data[name] ^= 0x01
    path.write_bytes(bytes(data))
    assert pq.read_schema(path).names[-1] == "rcore"  # readers without the key see the change
    with pytest.raises(sp.ParquetAuthenticationError, match="signature"):
        sp.read_table(path, identities=[identity])


def test_tampered_unencrypted_column_of_gcm_file_is_not_detected(tmp_path, table):
    """What docs/parquet.md says: columns without a key are not authenticated by PME."""
    identity = shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "p.parquet"
    plain = pa.table({"id": pa.array([7] * 1000, pa.int64()), "email": table.column("email").slice(0, 1000)})
    sp.write_table(plain, path, footer_key="f", column_keys={"f": ["email"]},
                   master_keys={"f": identity.recipient}, compression="none", use_dictionary=False)
    data = bytearray(path.read_bytes())
    start, size = column_chunk_range(path, identity, "id")
    data[start + size - 8] ^= 0x01  # inside the last value of "id"
    path.write_bytes(bytes(data))
    result = sp.read_table(path, identities=[identity])
    assert result.column("id").to_pylist()[-1] != 7


def test_plaintext_footer_and_gcm_ctr(tmp_path, table):
    identity = shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "pf.parquet"
    sp.write_table(table, path, footer_key="f", column_keys={"f": ["email"]}, master_keys={"f": identity.recipient},
                   plaintext_footer=True, algorithm="AES_GCM_CTR_V1")
    assert sp.read_table(path, identities=[identity]).equals(table)
    # Without keys: the schema, the row count and the columns without a key are readable.
    assert pq.read_schema(path).names == table.column_names
    assert pq.read_table(path, columns=["id"]).column("id").equals(table.column("id"))
    with pytest.raises(OSError):
        pq.read_table(path, columns=["email"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="algorithm"):
        sp.encryption_configuration(footer_key="f", algorithm="AES_CBC")
    with pytest.raises(ValueError, match="data_key_bits"):
        sp.encryption_configuration(footer_key="f", data_key_bits=512)
    with pytest.raises(TypeError):
        sp.encryption_configuration(footer_key="f", column_keys={"f": "email"})
    with pytest.raises(TypeError):
        sp.ShardsealKmsClient(master_keys=["f"])
    client = sp.ShardsealKmsClient()
    with pytest.raises(KeySpecError, match="not in master_keys"):
        client.wrap_key(os.urandom(16), "nobody")
    secret = shardseal.x25519.X25519Identity.generate().to_string()
    with pytest.raises(KeySpecError) as caught:
        client.wrap_key(os.urandom(16), secret)
    assert secret not in str(caught.value)


def test_client_does_not_pickle_or_show_identities():
    identity = shardseal.x25519.X25519Identity.generate()
    client = sp.ShardsealKmsClient(master_keys={"f": identity.recipient}, identities=[identity])
    with pytest.raises(TypeError):
        pickle.dumps(client)
    assert identity.to_string() not in repr(client)


def test_master_key_id_encoding():
    assert sp.master_key_id("footer") == "footer"
    assert sp.master_key_id("ssealx1abc") == "ssealx1abc"
    encoded = sp.master_key_id("keyring:/a b/ring.json#pii")
    assert not set(":;, ") & set(encoded)
    assert sp.master_key_name(encoded) == "keyring:/a b/ring.json#pii"
    assert sp.master_key_id(encoded) == encoded
    with pytest.raises(TypeError):
        sp.master_key_id("")


# -- rotation --------------------------------------------------------------------------------------

def test_rotation_then_new_key_reads_and_old_does_not(tmp_path, table, ring):
    new = shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "r.parquet"
    sp.write_table(table, path, footer_key="footer", column_keys={"pii": ["email"]},
                   master_keys={"footer": f"keyring:{ring.path}#footer", "pii": f"keyring:{ring.path}#pii"},
                   external_key_material=True)
    assert sp.has_external_key_material(path)
    parquet_bytes = path.read_bytes()
    assert sp.rotate_master_keys(path, identities=[ring],
                                 master_keys={"footer": new.recipient, "pii": new.recipient}) == [str(path)]
    assert path.read_bytes() == parquet_bytes  # only the key material changed
    assert sp.read_table(path, identities=[new]).equals(table)
    with pytest.raises(KeyNotFoundError):
        sp.read_table(path, identities=[ring])
    # Single wrapping: the data keys themselves are wrapped for the master keys.
    sp.rotate_master_keys(path, identities=[new], master_keys={"footer": new.recipient, "pii": new.recipient},
                          double_wrapping=False)
    assert sp.read_table(path, identities=[new]).equals(table)


def test_rotation_to_a_keyrings_newest_key(tmp_path, table, ring):
    path = tmp_path / "n.parquet"
    sp.write_table(table, path, footer_key=f"keyring:{ring.path}", external_key_material=True)
    old_id = ring.recipient().key_id
    assert {shardseal.inspect(c).stanzas[0].key_id for c in wrapped_containers(path)} == {old_id}
    ring.add("footer-2027")
    ring.save()
    sp.rotate_master_keys(path, identities=[ring])
    new_id = shardseal.keyring.Keyring.load(ring.path).recipient().key_id
    assert new_id != old_id
    assert {shardseal.inspect(c).stanzas[0].key_id for c in wrapped_containers(path)} == {new_id}
    assert sp.read_table(path, identities=[str(ring.path)]).equals(table)


def test_interrupted_rotation_is_recovered(tmp_path, table):
    old, new = shardseal.x25519.X25519Identity.generate(), shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "c.parquet"
    sp.write_table(table, path, footer_key="f", master_keys={"f": old.recipient}, external_key_material=True)
    current = tmp_path / f"_KEY_MATERIAL_FOR_{path.name}.json"
    temporary = tmp_path / f"_TMP_KEY_MATERIAL_FOR_{path.name}.json"
    assert not sp.recover_interrupted_rotation(path)
    # A crash before pyarrow deleted the old material: the new one may be partial, and goes.
    temporary.write_text('{"footerKey": "{\\"keyMater')
    sp.rotate_master_keys(path, identities=[old], master_keys={"f": new.recipient})
    assert not temporary.exists()
    assert sp.read_table(path, identities=[new]).equals(table)
    # A crash after it: only the complete new material is left, and is renamed into place.
    current.rename(temporary)
    assert sp.recover_interrupted_rotation(path)
    assert current.is_file() and not temporary.exists()
    assert sp.read_table(path, identities=[new]).equals(table)


def test_rotation_that_fails_leaves_the_key_material_unchanged(tmp_path, table):
    old, new = shardseal.x25519.X25519Identity.generate(), shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "f.parquet"
    sp.write_table(table, path, footer_key="f", column_keys={"c": ["email"]},
                   master_keys={"f": old.recipient, "c": old.recipient}, external_key_material=True)
    material = (tmp_path / f"_KEY_MATERIAL_FOR_{path.name}.json").read_bytes()
    with pytest.raises(KeySpecError):  # "c" has no new recipients and is no recipient string
        sp.rotate_master_keys(path, identities=[old], master_keys={"f": new.recipient})
    assert (tmp_path / f"_KEY_MATERIAL_FOR_{path.name}.json").read_bytes() == material
    assert not (tmp_path / f"_TMP_KEY_MATERIAL_FOR_{path.name}.json").exists()
    assert sp.read_table(path, identities=[old]).equals(table)


def test_rotation_needs_external_key_material(tmp_path, table):
    identity = shardseal.x25519.X25519Identity.generate()
    path = tmp_path / "i.parquet"
    sp.write_table(table, path, footer_key=identity.recipient.to_string())
    with pytest.raises(ValueError, match="external_key_material"):
        sp.rotate_master_keys(path, identities=[identity])
    with pytest.raises(FileNotFoundError):
        sp.rotate_master_keys(tmp_path / "missing.parquet", identities=[identity])
    # A folder with one such file among rotatable ones: nothing is rotated.
    other = tmp_path / "e.parquet"
    sp.write_table(table, other, footer_key=identity.recipient.to_string(), external_key_material=True)
    material = (tmp_path / f"_KEY_MATERIAL_FOR_{other.name}.json").read_bytes()
    with pytest.raises(ValueError, match="1 Parquet file"):
        sp.rotate_master_keys(tmp_path, identities=[identity])
    assert (tmp_path / f"_KEY_MATERIAL_FOR_{other.name}.json").read_bytes() == material


# -- datasets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("external", [False, True])
def test_dataset_round_trip_and_rotation(tmp_path, table, external):
    old, new = shardseal.x25519.X25519Identity.generate(), shardseal.x25519.X25519Identity.generate()
    folder = tmp_path / "ds"
    sp.write_dataset(table, folder, footer_key="footer", column_keys={"pii": ["email"]},
                     master_keys={"footer": old.recipient, "pii": old.recipient},
                     external_key_material=external, max_rows_per_file=1000, max_rows_per_group=1000)
    assert len(list(folder.glob("*.parquet"))) == 3
    assert sp.read_dataset(folder, identities=[old]).sort_by("id").equals(table)
    if not external:
        lazy = sp.dataset(folder, identities=[old])
        assert lazy.count_rows() == table.num_rows
        with pytest.raises(ValueError, match="external_key_material"):
            sp.rotate_master_keys(folder, identities=[old])
        return
    rotated = sp.rotate_master_keys(folder, identities=[old], master_keys={"footer": new.recipient,
                                                                           "pii": new.recipient})
    assert len(rotated) == 3
    assert sp.read_dataset(folder, identities=[new], columns=["id", "email"]).sort_by("id").equals(
        table.select(["id", "email"]))
    with pytest.raises(KeyNotFoundError):
        sp.read_dataset(folder, identities=[old])


# -- the command line ------------------------------------------------------------------------------

def test_cli_parquet_rotate(tmp_path, table, ring):
    from tests import cli_helpers

    new = shardseal.x25519.X25519Identity.generate()
    shardseal.x25519.write_identity_file(tmp_path / "new.key", new)
    folder = tmp_path / "ds"
    sp.write_dataset(table, folder, footer_key="footer", column_keys={"pii": ["email"]},
                     master_keys={"footer": f"keyring:{ring.path}#footer", "pii": f"keyring:{ring.path}#pii"},
                     external_key_material=True, max_rows_per_file=1500, max_rows_per_group=1500)
    recipient = new.recipient.to_string()
    result = cli_helpers.run("parquet-rotate", folder, "-i", ring.path, "--master-key", f"footer={recipient}",
                             "--master-key", f"pii={recipient}", cwd=tmp_path)
    cli_helpers.assert_ok(result)
    assert b"rotated the key material of 2 Parquet file(s)" in result.stderr
    assert sp.read_dataset(folder, identities=[str(tmp_path / "new.key")]).sort_by("id").equals(table)
    with pytest.raises(KeyNotFoundError):
        sp.read_dataset(folder, identities=[ring])
    # The old identity no longer unwraps: a clear error, no traceback, no key material.
    again = cli_helpers.run("parquet-rotate", folder, "-i", ring.path, "--master-key", f"footer={recipient}",
                            cwd=tmp_path)
    cli_helpers.assert_error(again, again.returncode, "Parquet master key")
    assert again.returncode != 0
    for secret in secrets_of(ring, new):
        assert secret.encode() not in again.stderr + again.stdout
    usage = cli_helpers.run("parquet-rotate", folder, "-i", ring.path, "--master-key", "footer", cwd=tmp_path)
    assert usage.returncode == 2 and b"--master-key takes NAME=RECIPIENT" in usage.stderr  # a usage error
