"""The ``shardseal`` command with recipients and identities (subprocesses, real components):
-r/-i with X25519, keyrings, passphrases (--passphrase-fd), a SoftHSM2 token and moto's
KMS-compatible server on loopback; keyring management, rotate, verify and --audit-log."""

from __future__ import annotations

import json
import os

import pytest

import shardseal

from .. import softhsm
from ..cli_helpers import assert_error, assert_ok, child_env, run
from ..kms_server import DUMMY_CREDENTIALS, KmsServer

DATA = os.urandom(100_000)


@pytest.fixture
def work(tmp_path):
    (tmp_path / "data.bin").write_bytes(DATA)
    return tmp_path


def x25519_identity(work, name: str) -> str:
    result = run("keygen", "--x25519", "-o", name, cwd=work)
    assert_ok(result)
    assert oct((work / name).stat().st_mode & 0o777) == "0o600"
    return result.stdout.decode().strip()


def test_x25519_keygen_encrypt_decrypt(work):
    alice, bob = x25519_identity(work, "alice.id"), x25519_identity(work, "bob.id")
    assert alice.startswith("ssealx1") and alice != bob
    assert b"SSEAL-X25519-SECRET-1" not in run("keygen", "--x25519", "-o", "c.id", cwd=work).stdout
    assert_ok(run("encrypt", "-r", alice, "-r", bob, "data.bin", cwd=work))
    for identity in ("alice.id", "bob.id"):
        assert_ok(run("decrypt", "-i", identity, "-o", "out", "--force", "data.bin.sseal", cwd=work))
        assert (work / "out").read_bytes() == DATA


def test_wrong_identity_is_exit_4_and_names_the_needed_ids(work):
    alice = x25519_identity(work, "alice.id")
    x25519_identity(work, "mallory.id")
    assert_ok(run("encrypt", "-r", alice, "data.bin", cwd=work))
    needed = shardseal.inspect((work / "data.bin.sseal").read_bytes()).stanzas[0].key_id
    assert_error(run("decrypt", "-i", "mallory.id", "-o", "out", "data.bin.sseal", cwd=work), 4,
                 "none of the given keys and identities opens this container", needed)
    assert not (work / "out").exists()


@pytest.mark.parametrize("argv, status, fragment", [
    (["encrypt", "-r", "nonsense", "data.bin"], 2, "unknown recipient"),
    (["encrypt", "-r", "ssealx1aaaa", "data.bin"], 1, "recipient"),
    (["decrypt", "-i", "missing.id", "data.bin.sseal"], 1, "cannot read identity missing.id"),
    (["encrypt", "-r", "SSEAL-X25519-SECRET-1AAAA", "data.bin"], 2, "not an X25519 identity"),
])
def test_bad_recipients_and_identities(work, argv, status, fragment):
    result = run(*argv, cwd=work)
    assert result.returncode == status, result.stderr
    assert fragment in result.stderr.decode()
    assert b"Traceback" not in result.stderr


def test_a_key_file_and_recipients_exclude_each_other(work):
    alice = x25519_identity(work, "alice.id")
    assert_ok(run("keygen", "-o", "k.key", cwd=work))
    result = run("encrypt", "-k", "k.key", "-r", alice, "data.bin", cwd=work)
    assert result.returncode == 2 and b"either -k or -r" in result.stderr


def test_audit_log_records_the_commands_key_use(work):
    alice = x25519_identity(work, "alice.id")
    assert_ok(run("--audit-log", "audit.jsonl", "encrypt", "-r", alice, "data.bin", cwd=work))
    env = child_env(SHARDSEAL_AUDIT_LOG=str(work / "audit.jsonl"))
    assert_ok(run("decrypt", "-i", "alice.id", "-o", "out", "data.bin.sseal", cwd=work, env=env))
    events = [json.loads(line) for line in (work / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["wrap", "unwrap"]
    assert events[1]["file"].endswith("data.bin.sseal") and events[1]["stanza"] == "x25519"
    secret = (work / "alice.id").read_text().split("SSEAL-X25519-SECRET-1")[1][:20]
    assert secret not in (work / "audit.jsonl").read_text()


# ---- PKCS#11: a real SoftHSM2 token ----------------------------------------------------------

TOKEN, PIN = "cli-token", "4321"


@pytest.fixture(scope="module")
def hsm_env(tmp_path_factory):
    module = softhsm.require()
    store = softhsm.SoftHsm(tmp_path_factory.mktemp("softhsm-cli"), module)
    store.init_token(TOKEN, PIN, "87654321")
    env = child_env(SHARDSEAL_PKCS11_MODULE=module, SHARDSEAL_PKCS11_PIN=PIN,
                    SOFTHSM2_CONF=os.environ["SOFTHSM2_CONF"])
    code = ("from shardseal import pkcs11; "
            f"pkcs11.create_kek({TOKEN!r}, 'kek-cli').close()")
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    yield env
    store.close()


def test_pkcs11_recipient_and_identity(work, hsm_env):
    uri = f"pkcs11:token={TOKEN};object=kek-cli"
    assert_ok(run("encrypt", "-r", uri, "data.bin", cwd=work, env=hsm_env))
    assert shardseal.inspect((work / "data.bin.sseal").read_bytes()).stanzas[0].key_id == uri
    assert_ok(run("decrypt", "-i", uri, "-o", "out", "data.bin.sseal", cwd=work, env=hsm_env))
    assert (work / "out").read_bytes() == DATA
    wrong_pin = dict(hsm_env, SHARDSEAL_PKCS11_PIN="0000")
    result = run("decrypt", "-i", uri, "-o", "out2", "data.bin.sseal", cwd=work, env=wrong_pin)
    assert result.returncode == 1 and b"0000" not in result.stderr, result.stderr
    assert not (work / "out2").exists()


# ---- AWS KMS: moto's KMS-compatible server on loopback ----------------------------------------

@pytest.fixture(scope="module")
def kms():
    server = KmsServer().start()
    yield server
    server.stop()


def test_aws_kms_recipient_and_identity(work, kms):
    key = kms.create_key()
    env = child_env(AWS_ENDPOINT_URL_KMS=kms.endpoint_url, AWS_DEFAULT_REGION="us-east-1",
                    AWS_ACCESS_KEY_ID=DUMMY_CREDENTIALS["aws_access_key_id"],
                    AWS_SECRET_ACCESS_KEY=DUMMY_CREDENTIALS["aws_secret_access_key"],
                    AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                    AWS_EC2_METADATA_DISABLED="true")
    assert_ok(run("encrypt", "-r", f"aws-kms:{key['Arn']}", "data.bin", cwd=work, env=env))
    assert_ok(run("decrypt", "-i", "aws-kms", "-o", "out", "data.bin.sseal", cwd=work, env=env))
    assert (work / "out").read_bytes() == DATA
    other = kms.create_key()
    assert_error(run("decrypt", "-i", f"aws-kms:{other['Arn']}", "-o", "out2", "data.bin.sseal",
                     cwd=work, env=env), 4, f"aws-kms:{key['Arn']}")


# ---- keyrings -------------------------------------------------------------------------------

def test_keyring_lifecycle(work):
    assert_ok(run("keyring", "create", "ring.json", cwd=work))
    assert oct((work / "ring.json").stat().st_mode & 0o777) == "0o600"
    assert_ok(run("keyring", "add", "ring.json", "kek-2025", cwd=work))
    assert_ok(run("encrypt", "-r", "keyring:ring.json", "data.bin", cwd=work))
    assert_ok(run("keyring", "add", "ring.json", "kek-2026", cwd=work))
    assert_ok(run("keyring", "retire", "ring.json", "kek-2025", cwd=work))
    listing = run("keyring", "list", "ring.json", cwd=work)
    assert_ok(listing)
    lines = listing.stdout.decode().splitlines()
    assert [line.split()[1] for line in lines] == ["decrypt-only", "active"]
    old_id = lines[0].split()[0]
    # A retired key still decrypts, but no longer encrypts.
    assert_ok(run("decrypt", "-i", "ring.json", "-o", "out", "data.bin.sseal", cwd=work))
    assert (work / "out").read_bytes() == DATA
    result = run("encrypt", "-r", "keyring:ring.json#kek-2025", "-o", "x.sseal", "data.bin", cwd=work)
    assert result.returncode == 1 and b"only active keys wrap" in result.stderr, result.stderr
    assert_ok(run("keyring", "destroy", "--yes", "ring.json", "kek-2025", cwd=work))
    assert_error(run("decrypt", "-i", "ring.json", "-o", "out2", "data.bin.sseal", cwd=work), 4, old_id)


# ---- passphrases ----------------------------------------------------------------------------

def run_with_passphrase(passphrase: bytes, *argv, cwd):
    read, write = os.pipe()
    os.write(write, passphrase + b"\n")
    os.close(write)
    try:
        return run(*argv, "--passphrase-fd", str(read), cwd=cwd, pass_fds=(read,))
    finally:
        os.close(read)


def test_passphrase_from_a_file_descriptor(work):
    assert_ok(run_with_passphrase(b"correct horse", "encrypt", "--work-factor", "10", "data.bin", cwd=work))
    assert [s.type for s in shardseal.inspect((work / "data.bin.sseal").read_bytes()).stanzas] == ["passphrase"]
    assert_ok(run_with_passphrase(b"correct horse", "decrypt", "-o", "out", "data.bin.sseal", cwd=work))
    assert (work / "out").read_bytes() == DATA
    assert_error(run_with_passphrase(b"wrong horse", "decrypt", "-o", "out2", "data.bin.sseal", cwd=work),
                 4, "wrong passphrase")
    corrupted = bytearray((work / "data.bin.sseal").read_bytes())
    header = shardseal.inspect(bytes(corrupted)).header_size
    corrupted[header - 3] ^= 1  # inside the stanza's checksum
    (work / "bad.sseal").write_bytes(bytes(corrupted))
    assert_error(run_with_passphrase(b"correct horse", "decrypt", "-o", "out3", "bad.sseal", cwd=work),
                 5, "corrupted")


def test_a_passphrase_must_be_alone(work):
    alice = x25519_identity(work, "alice.id")
    result = run_with_passphrase(b"pw", "encrypt", "-r", alice, "data.bin", cwd=work)
    assert result.returncode == 2 and b"only recipient" in result.stderr


def test_no_terminal_for_a_passphrase_prompt(work):
    result = run("encrypt", "-p", "data.bin", cwd=work, stdin=open(os.devnull), start_new_session=True)
    assert result.returncode == 1 and b"--passphrase-fd" in result.stderr, result.stderr


# ---- rotate and verify ------------------------------------------------------------------------

def payload_after_header(path) -> bytes:
    blob = path.read_bytes()
    return blob[shardseal.inspect(blob).header_size:]


def test_rotate_moves_a_folder_to_a_new_kek_without_touching_payloads(work):
    (work / "data").mkdir()
    for i in range(3):
        (work / "data" / f"s{i}.bin").write_bytes(os.urandom(50_000))
    assert_ok(run("keyring", "create", "ring.json", cwd=work))
    assert_ok(run("keyring", "add", "ring.json", "old", cwd=work))
    assert_ok(run("encrypt", "-r", "keyring:ring.json", "-o", "enc", "data", cwd=work))
    files = sorted((work / "enc").glob("*.sseal"))
    before = {f.name: payload_after_header(f) for f in files}
    old_id = shardseal.inspect(files[0].read_bytes()).stanzas[0].key_id
    assert_ok(run("keyring", "add", "ring.json", "new", cwd=work))
    result = run("rotate", "-i", "ring.json", "--remove", old_id, "--add", "keyring:ring.json#new", "enc",
                 cwd=work)
    assert_ok(result)
    assert b"3" in result.stderr  # the summary counts the files
    for f in files:
        assert payload_after_header(f) == before[f.name]
        assert old_id not in [s.key_id for s in shardseal.inspect(f.read_bytes()).stanzas]
    assert_ok(run("keyring", "destroy", "--yes", "ring.json", "old", cwd=work))
    assert_ok(run("decrypt", "-i", "ring.json", "-o", "dec", "enc", cwd=work))
    for i in range(3):
        assert (work / "dec" / f"s{i}.bin").read_bytes() == (work / "data" / f"s{i}.bin").read_bytes()


def test_rotate_without_the_right_identity_is_exit_4(work):
    alice, bob = x25519_identity(work, "alice.id"), x25519_identity(work, "bob.id")
    assert_ok(run("encrypt", "-r", alice, "data.bin", cwd=work))
    before = (work / "data.bin.sseal").read_bytes()
    assert_error(run("rotate", "-i", "bob.id", "--add", bob, "data.bin.sseal", cwd=work), 4)
    assert (work / "data.bin.sseal").read_bytes() == before
    assert_ok(run("rotate", "-i", "alice.id", "--add", bob, "data.bin.sseal", cwd=work))
    assert_ok(run("decrypt", "-i", "bob.id", "-o", "out", "data.bin.sseal", cwd=work))


def test_verify_finds_a_swapped_shard(work):
    from shardseal.manifest import Dataset

    recipient = x25519_identity(work, "owner.id")
    with Dataset.create(work / "ds", recipients=[recipient]) as ds:
        for i in range(3):
            with ds.open_shard(f"shard-{i}.sseal", "wb") as shard:
                shard.write(os.urandom(20_000))
    ok = run("verify", "-i", "owner.id", "ds", cwd=work)
    assert_ok(ok)
    a, b = work / "ds" / "shard-0.sseal", work / "ds" / "shard-1.sseal"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    bad = run("verify", "-i", "owner.id", "--json", "ds", cwd=work)
    assert bad.returncode == 3, bad.stderr
    report = json.loads(bad.stdout)
    assert sorted(p[0] for p in report["problems"]) == ["shard-0.sseal", "shard-1.sseal"]


def test_rotate_changes_a_passphrase(work):
    assert_ok(run_with_passphrase(b"old secret", "encrypt", "--work-factor", "10", "data.bin", cwd=work))
    payload = payload_after_header(work / "data.bin.sseal")
    old_fd, new_fd = os.pipe(), os.pipe()
    os.write(old_fd[1], b"old secret\n")
    os.write(new_fd[1], b"new secret\n")
    for fd in (old_fd[1], new_fd[1]):
        os.close(fd)
    try:
        result = run("rotate", "--passphrase-fd", str(old_fd[0]), "--new-passphrase-fd", str(new_fd[0]),
                     "data.bin.sseal", cwd=work, pass_fds=(old_fd[0], new_fd[0]))
    finally:
        os.close(old_fd[0])
        os.close(new_fd[0])
    assert_ok(result)
    assert payload_after_header(work / "data.bin.sseal") == payload
    assert_error(run_with_passphrase(b"old secret", "decrypt", "-o", "out", "data.bin.sseal", cwd=work),
                 4, "wrong passphrase")
    assert_ok(run_with_passphrase(b"new secret", "decrypt", "-o", "out", "data.bin.sseal", cwd=work))
    assert (work / "out").read_bytes() == DATA


def test_an_unwritable_audit_log_is_one_error_line(work):
    assert_error(run("--audit-log", str(work / "missing" / "audit.jsonl"), "keygen", "-o", "k.key", cwd=work),
                 1, "audit.jsonl")
