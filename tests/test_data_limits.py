"""Hostile numbers in array and tensor headers, JSON integers, inspect sizes and KMS key choice.

Each case is a defect an adversarial review found after issue 10 (FORMAT.md 2.3, 2.3.1, 2.11,
section 3 and step 8 of section 4): a header-controlled number must give the documented error
class, found before anything is allocated or any key is used.
"""

from __future__ import annotations

import io
import os
import struct

import pytest

import shardseal
from shardseal import keyfile, keyring, kms
from shardseal.container import blob as _blob, header as _container
from shardseal.core import backend as _backend, layout as _layout
from shardseal.keys import direct as _direct, stanzas as _stanzas
from shardseal.ops import manifest
from shardseal.errors import FormatError, KeyNotFoundError, KeyringFileError

from . import cli_helpers

torch = pytest.importorskip("torch")
import shardseal.safetensors as sst  # noqa: E402
import shardseal.torch as stt  # noqa: E402


def seal_with_metadata(key: bytes, header_metadata: dict, payload: bytes = b"") -> bytes:
    """An authentic direct-key container with any header metadata (a foreign or hostile writer)."""
    plan = _blob.plan_header(key, None, 256, header_metadata)
    return _backend.impl.seal(256, plan.input_key, _blob.random_salt(), plan.fixed, payload, 1, plan.header)


def raw_container(key: bytes, metadata_json: bytes, payload: bytes = b"") -> bytes:
    """A container whose metadata bytes are given as they are (bypassing the writer's checks)."""
    fixed = struct.pack(">10sBBI", _container.MAGIC, 1, 1, len(metadata_json)) + metadata_json
    block = _container.encode_key_block([_direct.direct_stanza(key)])
    return _backend.impl.seal(256, key, os.urandom(24), fixed, payload, 1, fixed + block)


HOSTILE_SHAPES = [
    [0, 2**62, 2**62],  # no bytes, but strides overflow 64 bits
    [2**62, 0, 2**62],
    [0, 2**61],  # float32: 2**63 bytes, one over the limit
    [2**63 - 1, 0],  # strided size over the limit with itemsize 4
    [0] * 65,  # numpy's limit is 64 dimensions
    [0] * 100,
    [1] * 100_001,
]


# ---- 1: decrypt_tensor and decrypt_array ----------------------------------------------------


@pytest.mark.parametrize("shape", HOSTILE_SHAPES, ids=lambda s: f"{s[:3]}x{len(s)}")
def test_hostile_tensor_shape_is_a_format_error(key, shape):
    blob = seal_with_metadata(key, {"content_type": "torch.Tensor", "tensor": {"dtype": "float32", "shape": shape}})
    with pytest.raises(FormatError):
        stt.decrypt_tensor(blob, key)


@pytest.mark.parametrize("shape", HOSTILE_SHAPES, ids=lambda s: f"{s[:3]}x{len(s)}")
def test_hostile_array_shape_is_a_format_error(key, shape):
    blob = seal_with_metadata(key, {"content_type": "numpy.ndarray", "array": {"dtype": "<f4", "shape": shape}})
    with pytest.raises(FormatError):
        shardseal.decrypt_array(blob, key)


@pytest.mark.parametrize("reader", ["tensor", "array"])
@pytest.mark.parametrize("dimension", [b"9223372036854775808", b"1" + b"0" * 30])
def test_a_dimension_past_64_bits_is_a_format_error(key, reader, dimension):
    metadata = b'{"%s":{"dtype":"%s","shape":[%s,0]}}' % (
        reader.encode(), b"float32" if reader == "tensor" else b"<f4", dimension)
    blob = raw_container(key, metadata)
    with pytest.raises(FormatError):
        (stt.decrypt_tensor if reader == "tensor" else shardseal.decrypt_array)(blob, key)


def test_the_largest_shapes_still_open(key):
    # (0, 2**61 - 1) float32: 4 * (2**61 - 1) bytes of strides fit in 64 bits; 64 dimensions.
    for shape in ([0, 2**61 - 1], [1] * 64, [0] * 64):
        payload = b"" if 0 in shape else bytes(4)
        tensor = stt.decrypt_tensor(seal_with_metadata(
            key, {"tensor": {"dtype": "float32", "shape": shape}}, payload), key)
        assert list(tensor.shape) == shape
        array = shardseal.decrypt_array(seal_with_metadata(
            key, {"array": {"dtype": "<f4", "shape": shape}}, payload), key)
        assert list(array.shape) == shape
    assert shardseal.decrypt_array(shardseal.encrypt_array(torch.zeros([1] * 64).numpy(), key), key).ndim == 64


def test_one_definition_of_the_limits():
    assert sst.MAX_TENSOR_BYTES is _blob.MAX_TENSOR_BYTES == 2**63 - 1
    assert sst.MAX_NDIM is _blob.MAX_NDIM == 64


# ---- 2: safe_open --------------------------------------------------------------------------


def safetensors_container(key: bytes, header: bytes, data: bytes = b"") -> bytes:
    return shardseal.encrypt(struct.pack("<Q", len(header)) + header + data, key)


@pytest.mark.parametrize("framework", ["numpy", "pt"])
@pytest.mark.parametrize("ndim", [65, 100_001])
def test_safe_open_refuses_too_many_dimensions(tmp_path, key, framework, ndim):
    header = b'{"t":{"dtype":"F32","shape":[' + b"1," * (ndim - 1) + b'0],"data_offsets":[0,0]}}'
    path = tmp_path / "t.safetensors.sseal"
    path.write_bytes(safetensors_container(key, header))
    with pytest.raises(FormatError, match="dimensions"):
        sst.safe_open(path, key, framework=framework)
    with pytest.raises(FormatError, match="dimensions"):
        sst.load_file(path, key)


def test_safe_open_takes_64_dimensions(tmp_path, key):
    header = b'{"t":{"dtype":"F32","shape":[' + b"1," * 63 + b'1],"data_offsets":[0,4]}}'
    path = tmp_path / "t.safetensors.sseal"
    path.write_bytes(safetensors_container(key, header, bytes(4)))
    with sst.safe_open(path, key, framework="numpy") as f:
        assert f.get_tensor("t").ndim == 64


# ---- 3: JSON integers ----------------------------------------------------------------------


def test_keyring_with_a_5000_digit_integer_is_a_keyring_error(tmp_path):
    path = tmp_path / "keyring.json"
    path.touch(mode=0o600)
    path.write_text('{"format":"shardseal-keyring-1","keys":[{"id":' + "1" * 5000 +
                    ',"name":"a","created":"x","state":"active","key":"x"}]}')
    with pytest.raises(KeyringFileError, match="number"):
        keyring.Keyring.load(path)
    path.write_text('{"format":"shardseal-keyring-1","keys":[], "x": ' + "1" * 200_000 + "}")
    with pytest.raises(KeyringFileError):
        keyring.Keyring.load(path)


@pytest.mark.parametrize("number", [b"9" * 5000, b"-" + b"9" * 5000, b"9223372036854775808",
                                    b"-9223372036854775808", b"00000000000000000001"])
def test_metadata_integer_out_of_range_is_a_format_error(key, number):
    blob = raw_container(key, b'{"n":' + number + b"}")
    with pytest.raises(FormatError):
        shardseal.inspect(blob)
    with pytest.raises(FormatError):
        shardseal.decrypt(blob, key)


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63 - 1), 0, -1])
def test_metadata_integer_bounds_accepted(key, value):
    blob = shardseal.encrypt(b"x", key, metadata={"n": value})
    assert shardseal.inspect(blob).metadata == {"n": value}
    assert shardseal.decrypt(blob, key) == b"x"


@pytest.mark.parametrize("value", [2**63, -(2**63), 10**40])
def test_writer_refuses_metadata_integers_readers_refuse(key, value):
    with pytest.raises(ValueError, match="integer"):
        shardseal.encrypt(b"x", key, metadata={"n": value})
    assert shardseal.encrypt(b"x", key, metadata={"n": str(value)})  # as a string it is fine


def test_minus_zero_is_not_canonical(key):
    with pytest.raises(FormatError, match="canonical"):
        shardseal.inspect(raw_container(key, b'{"n":-0}'))


def test_manifest_with_a_5000_digit_integer_is_a_format_error():
    with pytest.raises(FormatError):
        manifest._parse_canonical_object(b'{"n":' + b"9" * 5000 + b"}")


# ---- 4: inspect and the 2^38-chunk limit -----------------------------------------------------


def test_inspect_refuses_a_size_past_the_chunk_limit(key):
    blob = shardseal.encrypt(os.urandom(50_000), key)
    with pytest.raises(FormatError, match="2\\^38"):
        shardseal.inspect(blob[:200], container_size=10**30)
    header_size = shardseal.inspect(blob).header_size
    longest = header_size + 56 + (2**38 - 1) * 16400 + 16 + 16383
    assert shardseal.inspect(blob[:200], container_size=longest).plaintext_size == 2**38 * 16384 - 1
    with pytest.raises(FormatError):
        shardseal.inspect(blob[:200], container_size=longest + 1)


def test_message_sizes_at_the_chunk_limit():
    longest = 56 + (2**38 - 1) * 16400 + 16 + 16383
    assert _layout.message_plaintext_size(longest) == 2**38 * 16384 - 1
    for size in (longest + 1, longest + 17, 56 + 2**38 * 16400 + 16, 10**30):
        with pytest.raises(FormatError):
            _layout.message_plaintext_size(size)


def test_inspect_restores_the_file_position(key):
    blob = shardseal.encrypt(os.urandom(50_000), key)
    source = io.BytesIO(b"prefix" + blob)
    source.seek(6)
    assert shardseal.inspect(source).plaintext_size == 50_000
    assert source.tell() == 6
    source.seek(0)  # not a container here: the position is restored on errors too
    with pytest.raises(FormatError):
        shardseal.inspect(source)
    assert source.tell() == 0


# ---- 5: which KMS keys a file may make you call ----------------------------------------------

ARN_OURS = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ARN_THEIRS = "arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"


class CountingProvider(kms.KeyProvider):
    """A provider that records each unwrap request (the CloudTrail of a key's owner)."""

    name = "aws-kms"

    def __init__(self) -> None:
        self.requests: list[str] = []

    def wrap(self, key_id, file_key, context):
        return b"w" + bytes(file_key)

    def unwrap(self, key_id, wrapped, context):
        self.requests.append(key_id)
        return wrapped[1:]


def test_allowed_accounts_declines_keys_of_other_accounts():
    from shardseal.kms import KmsIdentity, KmsKey

    provider = CountingProvider()
    hostile = shardseal.encrypt(b"data", recipients=[KmsKey(provider, ARN_THEIRS)])
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(hostile, identities=[KmsIdentity(provider, allowed_accounts=["111122223333"])])
    assert provider.requests == []  # no request reached the other account's key
    for reference in ("alias/ours", "1234abcd-12ab-34cd-56ef-1234567890ab", "arn:aws:kms:x:1:key/y"):
        blob = shardseal.encrypt(b"data", recipients=[KmsKey(provider, reference)])
        with pytest.raises(KeyNotFoundError):
            shardseal.decrypt(blob, identities=[KmsIdentity(provider, allowed_accounts="111122223333")])
    assert provider.requests == []
    ours = shardseal.encrypt(b"data", recipients=[KmsKey(provider, ARN_THEIRS), KmsKey(provider, ARN_OURS)])
    assert shardseal.decrypt(ours, identities=[KmsIdentity(provider, allowed_accounts=["111122223333"])]) == b"data"
    assert provider.requests == [ARN_OURS]
    # Without a filter the file chooses: the hostile key is asked first.
    provider.requests.clear()
    shardseal.decrypt(ours, identities=[KmsIdentity(provider)])
    assert provider.requests == [ARN_THEIRS]


def test_allowed_accounts_arguments():
    from shardseal.kms import KmsIdentity

    provider = CountingProvider()
    for bad in ([], ["11112222333"], ["1111222233334"], ["11112222333x"], ["１１１１２２２２３３３３"]):
        with pytest.raises(ValueError):
            KmsIdentity(provider, allowed_accounts=bad)
    with pytest.raises(TypeError):
        KmsIdentity(provider, allowed_accounts=[111122223333])
    assert "111122223333" in repr(KmsIdentity(provider, allowed_accounts=["111122223333"]))


def test_allowed_accounts_with_aws_kms(tmp_path):
    pytest.importorskip("moto")
    from shardseal.kms import AwsKms, KmsIdentity, KmsKey

    from .kms_server import KmsServer

    server = KmsServer().start()
    try:
        arn = server.create_key("allow-list")["Arn"]
        account = arn.split(":")[4]
        aws = AwsKms(server.client())
        blob = shardseal.encrypt(b"data", recipients=[KmsKey(aws, arn)])
        assert shardseal.decrypt(blob, identities=[KmsIdentity(aws, allowed_accounts=[account])]) == b"data"
        other = "111122223333" if account != "111122223333" else "444455556666"
        with pytest.raises(KeyNotFoundError):
            shardseal.decrypt(blob, identities=[KmsIdentity(aws, allowed_accounts=[other])])
    finally:
        server.stop()


# ---- 6a: the closed tensor dtype table ------------------------------------------------------


def test_tensor_dtype_table_matches_torch():
    for name, itemsize in stt.DTYPE_SIZES.items():
        dtype = getattr(torch, name, None)
        if isinstance(dtype, torch.dtype):
            assert dtype.itemsize == itemsize, name
            assert stt.DTYPES[name] is dtype
    # Every plain-bytes dtype of this torch is in the table (a new torch dtype needs a FORMAT.md
    # entry before files may name it).
    names = {str(v).split(".", 1)[1] for v in vars(torch).values() if isinstance(v, torch.dtype)}
    assert {n for n in names if not n.startswith(("qint", "quint"))} <= set(stt.DTYPE_SIZES)


def test_tensor_dtype_table_is_the_one_in_format_md():
    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "FORMAT.md"), encoding="utf-8").read()
    for name in stt.DTYPE_SIZES:
        if name[-1].isdigit() and name.rstrip("0123456789") in ("uint", "int") and int(name[-1]) < 8 and len(name) <= 5:
            continue  # uint1 ... uint7, int1 ... int7 are written as ranges
        assert f"`{name}`" in text, name


@pytest.mark.parametrize("name", ["qint8", "quint8", "Tensor", "__class__", "float", "half", "", "x" * 1000])
def test_dtype_outside_the_table_is_a_format_error(key, name):
    blob = seal_with_metadata(key, {"tensor": {"dtype": name, "shape": [0]}})
    with pytest.raises(FormatError) as info:
        stt.decrypt_tensor(blob, key)
    assert len(str(info.value)) < 200


# ---- 6c: control characters in a KMS key reference ------------------------------------------


def test_cli_escapes_control_characters_in_key_ids(tmp_path, key):
    body = _stanzas.reference_body("aws-kms", "\x1b[2Jevil\x9b", b"wrapped")
    blob = shardseal.encrypt(b"x", key)
    header = _container.parse_header(blob)
    fixed = header.fixed
    block = _container.encode_key_block([_container.Stanza(_stanzas.KMS, body)])
    path = tmp_path / "evil.sseal"
    path.write_bytes(fixed + block + bytes(memoryview(blob)[header.size:]))
    result = cli_helpers.run("inspect", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"\x1b" not in result.stdout and "\x9b".encode() not in result.stdout
    assert b"\\x1b[2Jevil\\x9b" in result.stdout  # escaped as cli.terminal_safe does
    keyfile.write_key_file(tmp_path / "other.key", shardseal.generate_key())
    result = cli_helpers.run("decrypt", "-k", str(tmp_path / "other.key"), str(path), "-o",
                             str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0
    assert b"\\x1b[2Jevil" in result.stderr  # the error names the key ids, escaped
    assert b"\x1b" not in result.stderr
