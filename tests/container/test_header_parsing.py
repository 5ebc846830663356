"""Header metadata nesting (docs/FORMAT.md 2.3 and 2.13): a fixed bound, checked without
recursion, so that deep JSON is a FormatError (reader) or ValueError (writer) wherever it is
parsed, never a RecursionError and never an answer that depends on the caller's stack depth."""

from __future__ import annotations

import sys

import pytest

import shardseal
from shardseal.container import header as _container
from shardseal.errors import FormatError


def nested(levels: int) -> dict:
    """A metadata argument that makes a header metadata object `levels` deep ({"user": ...})."""
    value: dict = {}
    for _ in range(levels - 2):
        value = {"a": value}
    return value


def with_metadata_bytes(blob: bytes, metadata: bytes) -> bytes:
    header = _container.parse_header(blob)
    fixed = header.fixed[:12] + len(metadata).to_bytes(4, "big") + metadata
    return fixed + blob[len(header.fixed):]


def test_the_deepest_metadata_round_trips(backend):
    key = shardseal.generate_key()
    blob = shardseal.encrypt(b"x", key, metadata=nested(_container.MAX_METADATA_DEPTH))
    assert shardseal.decrypt(blob, key) == b"x"
    assert _container.json_depth(_container.parse_header(blob).fixed[16:]) == 64


@pytest.mark.parametrize("levels", [65, 600, 5000])
def test_deeper_metadata_is_refused_by_the_writer(levels):
    with pytest.raises(ValueError, match="nested more than 64 levels"):
        shardseal.encrypt(b"x", shardseal.generate_key(), metadata=nested(levels))


@pytest.mark.parametrize("levels", [65, 600, 100_000])
def test_deeper_metadata_is_a_format_error_for_readers(backend, levels):
    key = shardseal.generate_key()
    blob = shardseal.encrypt(b"x", key)
    deep = with_metadata_bytes(blob, b'{"a":' * levels + b"1" + b"}" * levels)
    for call in (lambda: shardseal.inspect(deep), lambda: shardseal.decrypt(deep, key)):
        with pytest.raises(FormatError, match="nested more than 64 levels"):
            call()


def test_the_answer_does_not_depend_on_the_stack_depth():
    """600 levels parse in Python's JSON parser at the top of the stack, but not near its limit:
    the bound refuses them everywhere alike."""
    key = shardseal.generate_key()
    deep = with_metadata_bytes(shardseal.encrypt(b"x", key), b'{"a":' * 600 + b"1" + b"}" * 600)

    def at_depth(n: int):
        if n:
            return at_depth(n - 1)
        with pytest.raises(FormatError, match="nested"):
            shardseal.inspect(deep)

    at_depth(sys.getrecursionlimit() - 200)
    at_depth(0)


def test_brackets_in_strings_do_not_count():
    assert _container.json_depth(b'{"a":"[[[[{{{{","b":["\\"]]]"]}') == 2
    key = shardseal.generate_key()
    blob = shardseal.encrypt(b"x", key, metadata={"s": "[" * 1000})
    assert shardseal.decrypt(blob, key) == b"x"
