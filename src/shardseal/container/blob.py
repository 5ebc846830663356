"""The in-memory API: containers from and to bytes, caller buffers and numpy arrays."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Iterable, Mapping, Optional, Union, cast

import numpy as np

from ..core import backend as _backend, buffers as _buffers, layout as _layout
from . import _caches, _plan, header as _container
from ..keys import envelope as _envelope, direct as _direct, registry as _registry, stanzas as _stanzas
from .. import _redact, audit, metrics
from ..errors import FormatError, TruncatedError
from ..core.buffers import BytesLike
from ..core.layout import Suite
from ..keys.keyref import KeyLike, resolve_reference
from ..keys.envelope import DirectKey
from ..keys.registry import Identities, Recipients

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

# Count a container and its plaintext size (shardseal.metrics; only once metrics are enabled).
_count_decrypted = metrics.container_counter("opened", "decrypt")
_count_encrypted = metrics.container_counter("sealed", "encrypt")

# What inspect reads: a container in memory, a path, or a binary file object.
InspectSource = Union[BytesLike, str, "os.PathLike[str]", "os.PathLike[bytes]", IO[bytes]]

_ARRAY_CONTENT_TYPE = "numpy.ndarray"
# Limits on the shape of an array or tensor header (FORMAT.md 2.3.1), checked before anything
# is allocated: numpy's limit on dimensions, and sizes and strides (zero dimensions counted as
# one) that fit a signed 64-bit integer, as numpy and torch compute them.
MAX_NDIM = 64
MAX_TENSOR_BYTES = 2**63 - 1


def random_salt() -> bytes:
    # A module-level function so that tests can inject a fixed salt.
    return os.urandom(_layout.SALT_SIZE)


def generate_key() -> bytes:
    """Returns a new random 32-byte key from the operating system's CSPRNG."""
    return os.urandom(_direct.KEY_SIZE)


@dataclass(frozen=True)
class StanzaInfo:
    """A key stanza as ``inspect`` reports it: its type name and the key id it names."""

    type: str
    key_id: str


@dataclass(frozen=True)
class ContainerInfo:
    """What a container's header says, readable without any key.

    The metadata is authenticated (a change fails decryption) but not secret.
    """

    version: int
    suite: str
    stanzas: tuple[StanzaInfo, ...]
    metadata: dict[str, Any]
    array: Optional[dict[str, Any]]
    content_type: Optional[str]
    header_size: int
    plaintext_size: Optional[int]  # None: unknown (inspect of a prefix, or of a pipe)
    tensor: Optional[dict[str, Any]] = None


def header_metadata(metadata: Optional[Mapping[str, Any]],
                    extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    fields = dict(extra or {})
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
        fields["user"] = dict(metadata)
    return fields


def _check_suite(suite: int) -> int:
    if suite not in _layout.SUITE_KEY_SIZES or isinstance(suite, bool):
        raise ValueError(f"suite must be 256 or 128, got {_redact.shown(suite)}")
    return suite


def plan_header(key: Optional[KeyLike], recipients: Optional[Recipients], suite: int,
                header_metadata: dict[str, Any]) -> _plan.Plan:
    """The header and input key for a new container (a direct key or recipients)."""
    suite = _check_suite(suite)
    key = resolve_reference(key)
    if key is not None and recipients is None:
        # The direct-key header is cached per key: no key id derivation or encoding per call.
        return _caches.direct_plan(key, suite, _caches.fixed_part(suite, header_metadata))
    return _plan.plan(key, recipients, suite, header_metadata)


def encrypted_size(plaintext_size: int, *, metadata: Optional[Mapping[str, Any]] = None, suite: Suite = 256,
                   recipients: Optional[Recipients] = None) -> int:
    """The exact size ``encrypt`` produces for a plaintext of plaintext_size bytes.

    Use it to allocate the output buffer of ``encrypt_into``. Without recipients the size is
    that of a direct-key container; with them, that of a container for those recipients (a
    recipient whose stanza size is not fixed, such as a KMS key, is asked to wrap a dummy key).

    Raises:
        TypeError: metadata is not a JSON-serialisable mapping, or bad recipients.
        ValueError: a negative size or an unknown suite.
    """
    if isinstance(plaintext_size, bool) or not isinstance(plaintext_size, int) or plaintext_size < 0:
        raise ValueError(f"plaintext_size must be a non-negative int, got {_redact.shown(plaintext_size)}")
    fixed = _container.encode_fixed(_check_suite(suite), header_metadata(metadata))
    if recipients is None:
        stanza = _direct.direct_stanza(bytes(_direct.KEY_SIZE))  # the size does not depend on the key
        block_size = len(_container.encode_key_block([stanza]))
    else:
        block_size = 2 + sum(_envelope.stanza_size(r, suite, fixed)
                             for r in _registry.check_recipients(recipients))
    return len(fixed) + block_size + _layout.message_size(plaintext_size)


def encrypt(data: BytesLike, key: Optional[KeyLike] = None, *, recipients: Optional[Recipients] = None,
            metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
            suite: Suite = 256) -> bytes:
    """Encrypts data into a shardseal container under a 32-byte key or for recipients.

    Args:
        data: any bytes-like object (bytes, bytearray, memoryview, numpy array, mmap).
        key: the 32-byte key (see ``generate_key``), or a key reference
            (``shardseal.keyref.KeyFile``, ``EnvKey``, ...) resolved here. Give either key or
            recipients.
        recipients: envelope encryption: a fresh random file key is wrapped for each recipient
            (``keyring.KeyringRecipient``, ``passphrase.Passphrase``,
            ``x25519.X25519Recipient``, ``pkcs11.Pkcs11Recipient``, ``kms.KmsRecipient``) or
            recipient strings (``ssealx1...``, ``keyring:PATH[#NAME]``, ``pkcs11:...``,
            ``aws-kms:KEY``: ``shardseal.keys.registry``); any one of their identities decrypts.
        metadata: a JSON-serialisable mapping stored in the header: authenticated, not secret.
        threads: worker threads; None uses every available CPU, 1 runs inline.
        suite: 256 (Cobblestone-256, AES-256-GCM, the default) or 128 (AES-128-GCM).

    Returns:
        header || Cobblestone message, as bytes.

    Raises:
        TypeError: data or key is not bytes-like, metadata is not a JSON mapping, both or
            neither of key and recipients.
        ValueError: a key that is not 32 bytes, a bad thread count or suite, or a bad set of
            recipients (empty, a passphrase beside others).
    """
    source = _buffers.readable_bytes(data, "data")
    plan = plan_header(key, recipients, suite, header_metadata(metadata))
    container: bytes = _backend.impl.seal(suite, plan.input_key, random_salt(), plan.fixed, source,
                                          _buffers.thread_count(threads, len(source)), plan.header)
    if metrics.active:
        _count_encrypted(len(source))
    return container


def encrypt_into(data: BytesLike, key: Optional[KeyLike] = None, out: Optional[BytesLike] = None, *,
                 recipients: Optional[Recipients] = None, metadata: Optional[Mapping[str, Any]] = None,
                 threads: Optional[int] = None, suite: Suite = 256) -> int:
    """Encrypts data into the caller's buffer ``out`` without intermediate copies.

    ``out`` needs ``encrypted_size(len(data), metadata=metadata, suite=suite)`` bytes; a larger
    buffer is fine and only its start is written.

    Returns:
        The number of bytes written.

    Raises:
        TypeError: out is read-only or not a C-contiguous buffer (and as for ``encrypt``).
        ValueError: out is too small or overlaps data (and as for ``encrypt``).
    """
    source = _buffers.readable(data, "data")
    if out is None:
        raise TypeError("encrypt_into() needs an output buffer, out=")
    target = _buffers.writable(out, "out")
    _buffers.check_no_overlap(source, target)
    plan = plan_header(key, recipients, suite, header_metadata(metadata))
    needed = len(plan.header) + _layout.message_size(source.nbytes)
    _buffers.require_room(target, needed)
    target[: len(plan.header)] = plan.header
    _backend.impl.seal_into(suite, plan.input_key, random_salt(), plan.fixed, source,
                            target[len(plan.header):], _buffers.thread_count(threads, source.nbytes))
    if metrics.active:
        _count_encrypted(source.nbytes)
    return needed


def open_header(blob: BytesLike) -> tuple[memoryview, _container.Header]:
    view = _buffers.readable(blob, "blob")
    return view, _container.parse_header(view)


def _open_shared_header(blob: BytesLike) -> tuple[memoryview, _container.Header]:
    """As open_header, through the header cache: the Header may be shared, so callers must
    neither change it nor hand it (or its metadata) to the user."""
    view = _buffers.readable(blob, "blob")
    try:
        return view, _caches.parse_header(view)
    except (FormatError, TruncatedError) as exc:
        audit.record_rejection(exc)
        raise


def _input_key(header: _container.Header, key: Union[KeyLike, DirectKey, None],
               identities: Optional[Identities]) -> bytes:
    key = resolve_reference(key)
    if identities is None and key is not None:
        # The key id is derived once per key, and the stanza matched once per header.
        return _caches.input_key(header, _caches.direct_key(key))
    return _envelope.unwrap_input_key(header, key, _registry.resolve_identities(identities))


def clear_key_cache() -> None:
    """Forgets the keys and parsed headers cached to speed up repeated small calls.

    ``encrypt``/``decrypt`` with a direct ``bytes`` key remember up to 16 recent keys (with
    their key ids, direct-key headers and input keys) so that a loop over small messages does
    not derive the key id on every call. Call this once a key is no longer in use, or set
    ``SHARDSEAL_KEY_CACHE=0`` before importing shardseal to turn the key cache off (an integer
    sets its size). The cache is per process and is never pickled.
    """
    _caches.clear()


def decrypted_size(blob: BytesLike) -> int:
    """The exact plaintext size of a container, from its header and length (no key needed).

    Raises:
        FormatError: not a shardseal container this version reads.
        TruncatedError: the container is cut short.
    """
    view, header = _open_shared_header(blob)
    return _layout.message_plaintext_size(view.nbytes - header.size)


def decrypt(blob: BytesLike, key: Optional[KeyLike] = None, *, identities: Optional[Identities] = None,
            threads: Optional[int] = None) -> bytes:
    """Decrypts a shardseal container with its 32-byte key or with identities.

    The commitment is checked before any chunk and every chunk is authenticated before any
    plaintext is returned.

    Args:
        blob: the container (any bytes-like object).
        key: the 32-byte key of a direct-key container, or a key reference (resolved here).
        identities: identities to try in order, after key (``keyring.KeyringIdentity``,
            ``passphrase.Passphrase``, ``x25519.X25519Identity``, ``pkcs11.Pkcs11Identity``,
            ``kms.KmsIdentity``), identity strings (an identity file's path,
            ``keyring:PATH``, ``pkcs11:...``, ``aws-kms[:KEY]``: ``shardseal.keys.registry``) or
            ``shardseal.keyref.IdentityRef`` objects, loaded here.
        threads: worker threads; None uses every available CPU, 1 runs inline.

    Raises:
        FormatError: not a shardseal container this version reads.
        KeyNotFoundError: no given key or identity opens the container; its ``key_ids`` name
            the keys that would (``WrongPassphraseError`` for a wrong passphrase).
        AuthenticationError: the container was tampered with.
        TruncatedError: the container is cut short.
        TypeError, ValueError: bad arguments (as for ``encrypt``).
    """
    view, header = _open_shared_header(blob)
    input_key = _input_key(header, key, identities)
    payload = view[header.size:]
    with audit.authentication_failures():
        plaintext: bytes = _backend.impl.open(header.suite, input_key, header.fixed, payload,
                                              _buffers.thread_count(threads, payload.nbytes))
    if metrics.active:
        _count_decrypted(len(plaintext))
    return plaintext


def decrypt_into(blob: BytesLike, key: Optional[KeyLike] = None, out: Optional[BytesLike] = None, *,
                 identities: Optional[Identities] = None, threads: Optional[int] = None) -> int:
    """Decrypts a container into the caller's buffer ``out`` (``decrypted_size(blob)`` bytes).

    On any failure ``out`` holds no plaintext: a bad commitment is found before anything is
    written, and a bad chunk zeroes the whole plaintext region before the error is raised.

    Returns:
        The number of plaintext bytes written.

    Raises:
        FormatError: not a shardseal container this version reads.
        KeyNotFoundError: no given key or identity opens the container (as for ``decrypt``).
        AuthenticationError: the container was tampered with.
        TruncatedError: the container is cut short.
        TypeError, ValueError: bad arguments (as for ``encrypt``), or an ``out`` that is
            missing, read-only, too small or overlaps ``blob``.
    """
    view, header = _open_shared_header(blob)
    if out is None:
        raise TypeError("decrypt_into() needs an output buffer, out=")
    target = _buffers.writable(out, "out")
    _buffers.check_no_overlap(view, target)
    input_key = _input_key(header, key, identities)
    payload = view[header.size:]
    _buffers.require_room(target, _layout.message_plaintext_size(payload.nbytes))
    with audit.authentication_failures():
        written: int = _backend.impl.open_into(header.suite, input_key, header.fixed, payload, target,
                                               _buffers.thread_count(threads, payload.nbytes))
    if metrics.active:
        _count_decrypted(written)
    return written


def strided_size(shape: Iterable[int], itemsize: int) -> int:
    """The byte size of shape with zero dimensions counted as one: the largest stride (and
    size) numpy or torch computes for it. Stops once past MAX_TENSOR_BYTES (no huge integers)."""
    size = itemsize
    for n in shape:
        size *= max(n, 1)
        if size > MAX_TENSOR_BYTES:
            break
    return size


def check_shape(shape: object, itemsize: int, what: str) -> list[int]:
    """Checks the shape of a header's array or tensor description against FORMAT.md 2.3.1.

    Raises:
        FormatError: not a list of at most MAX_NDIM integers 0 ... 2**63 - 1 (no bools), or
            a byte size (zero dimensions counted as one) over MAX_TENSOR_BYTES.
    """
    if isinstance(shape, list) and len(shape) > MAX_NDIM:
        raise FormatError(f"the header's {what} shape has {len(shape)} dimensions (at most {MAX_NDIM})")
    if not isinstance(shape, list) or not all(type(n) is int and 0 <= n <= MAX_TENSOR_BYTES for n in shape):
        raise FormatError(f"the header's {what} shape is not a list of integers 0 ... 2**63 - 1")
    if strided_size(shape, itemsize) > MAX_TENSOR_BYTES:
        raise FormatError(f"the header's {what} shape and dtype do not match any payload: they describe "
                          f"more than {MAX_TENSOR_BYTES} bytes (zero dimensions counted as one), past "
                          "any 64-bit size or stride")
    return shape


def _dtype_descr(dtype: np.dtype[Any]) -> Any:
    if dtype.hasobject:
        raise TypeError(f"arrays of dtype {dtype} hold Python objects and cannot be encrypted")
    return np.lib.format.dtype_to_descr(dtype)


def _descr_from_json(descr: Any) -> Any:
    """Undoes what JSON did to numpy's dtype description: structured fields back to tuples."""
    if isinstance(descr, str):
        return descr
    fields = []
    for name, fmt, *shape in descr:
        name = tuple(name) if isinstance(name, list) else name
        fields.append((name, _descr_from_json(fmt), *(tuple(s) for s in shape)))
    return fields


def _descr_to_dtype(descr: Any) -> np.dtype[Any]:
    try:
        dtype = np.lib.format.descr_to_dtype(_descr_from_json(descr))
    except (TypeError, ValueError) as exc:
        raise FormatError(f"the header's array dtype is not valid: {exc}") from None
    if dtype.hasobject:
        # Python object references are not bytes: such a header was never written by encrypt_array.
        raise FormatError("the header's array dtype holds Python objects, which no container can hold")
    return dtype


def encrypt_array(array: ArrayLike, key: Optional[KeyLike] = None, *, recipients: Optional[Recipients] = None,
                  metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
                  suite: Suite = 256) -> bytes:
    """Encrypts a numpy array; its dtype, byte order and shape go into the header.

    Non-contiguous and Fortran-ordered arrays are copied into C order first.

    Raises:
        TypeError: an object dtype, or a value that is not array-like (and as ``encrypt``).
    """
    values: NDArray[Any] = np.asarray(array)
    descr = _dtype_descr(values.dtype)
    if not values.flags.c_contiguous:
        values = values.copy(order="C")
    info = {"content_type": _ARRAY_CONTENT_TYPE, "array": {"dtype": descr, "shape": list(values.shape)}}
    plan = plan_header(key, recipients, suite, header_metadata(metadata, info))
    data = values.reshape(-1).view(np.uint8)
    container: bytes = _backend.impl.seal(suite, plan.input_key, random_salt(), plan.fixed, data,
                                          _buffers.thread_count(threads), plan.header)
    return container


def decrypt_array(blob: BytesLike, key: Optional[KeyLike] = None, *, identities: Optional[Identities] = None,
                  threads: Optional[int] = None) -> NDArray[Any]:
    """Decrypts a container made by ``encrypt_array`` into a new writable array.

    Raises:
        FormatError: the container does not hold an array, or its array description is
            invalid (and as ``decrypt``).
    """
    view, header = _open_shared_header(blob)
    spec = header.metadata.get("array")
    if not isinstance(spec, dict) or "dtype" not in spec or "shape" not in spec:
        raise FormatError("this container does not hold a numpy array (use decrypt())")
    dtype = _descr_to_dtype(spec["dtype"])
    shape = check_shape(spec["shape"], dtype.itemsize, "array")  # before np.empty, no bools
    plaintext_size = _layout.message_plaintext_size(view.nbytes - header.size)
    if int(np.prod(shape, dtype=object)) * dtype.itemsize != plaintext_size:
        # Either tampering (decryption then fails authentication) or a writer bug.
        decrypt(blob, key, identities=identities, threads=threads)
        raise FormatError("the header's array shape and dtype do not match the payload size")
    result = np.empty(shape, dtype)
    decrypt_into(view, key, result.reshape(-1).view(np.uint8), identities=identities, threads=threads)
    return result


def inspect(source: InspectSource, *, partial: bool = False, container_size: Optional[int] = None) -> ContainerInfo:
    """Reads a container's header without a key: suite, key stanzas, metadata and sizes.

    Args:
        source: the container as bytes-like data, a path, or a binary file object. From a
            path or a file only the header is read; the container's size is the file's
            size (from the file object's current position to its end).
        partial: source (bytes-like) holds only the start of the container, such as its
            first few KiB read from storage: plaintext_size is then None (unknown) unless
            container_size gives the whole container's size. Without partial, bytes-like
            data is taken to be the whole container: a prefix whose length happens to be
            that of a complete container cannot be told apart from one, so pass the path,
            the file, or partial=True.
        container_size: the whole container's size in bytes, when source is a prefix.

    A seekable file object is left at the position it had before the call (a pipe cannot be:
    the header has been read from it).

    Raises:
        FormatError: not a shardseal container this version reads, or a size (of the
            container, or container_size) whose message would have more than 2^38 chunks.
        TruncatedError: the container (or the header, with partial) is cut short.
        OSError: a path or file that cannot be read.
    """
    if isinstance(source, (str, os.PathLike)):
        with _open_path(source) as file:
            return _inspect_file(file, container_size)
    if hasattr(source, "read") and not _is_buffer(source):
        return _inspect_file(cast("IO[bytes]", source), container_size)
    view, header = open_header(cast(BytesLike, source))
    if container_size is not None:
        return container_info(header, _check_container_size(container_size, header) - header.size)
    if partial:
        return container_info(header, None)
    return container_info(header, view.nbytes - header.size)


def _open_path(path: Union[str, "os.PathLike[str]", "os.PathLike[bytes]"]) -> IO[bytes]:
    """open(path, "rb"), whose error names the path only when it cannot be a key pasted there."""
    try:
        return open(path, "rb")
    except OSError as exc:
        errno, strerror = exc.errno, exc.strerror
    name = os.fsdecode(path)
    shown = name if os.path.lexists(name) or not _redact.looks_like_secret(name) else \
        _redact.shown_argument(name)
    raise OSError(errno, strerror, shown)  # outside the except block: no __context__


def _is_buffer(obj: Any) -> bool:
    # bytes is both a path (os.fsencode-style) and a buffer: bytes are always data here.
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return True
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


def _check_container_size(size: object, header: _container.Header) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < header.size:
        raise ValueError(f"container_size must be an int of at least the header's size "
                         f"({header.size}), got {_redact.shown(size)}")
    return size


def _inspect_file(file: IO[bytes], container_size: Optional[int]) -> ContainerInfo:
    seekable = file.seekable()
    start = file.tell() if seekable else 0
    try:
        header = _container.read_header(lambda n: read_exact(file, n))
        if container_size is None:
            if not seekable:
                return container_info(header, None)  # a pipe: its size is not known
            container_size = file.seek(0, os.SEEK_END) - start
        return container_info(header, _check_container_size(container_size, header) - header.size)
    finally:
        if seekable:
            file.seek(start)  # the caller's position, as before the call (even on an error)


def read_exact(file: IO[bytes], size: int) -> bytes:
    """Reads size bytes, or fewer only at the end of the input (pipes return short reads)."""
    parts = []
    while size > 0:
        data = file.read(size)
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def container_info(header: _container.Header, message_size: Optional[int]) -> ContainerInfo:
    """The ContainerInfo of a parsed header followed by a message of message_size bytes
    (None: unknown, and so is the plaintext size).

    Raises:
        TruncatedError: message_size is not that of a complete message.
    """
    stanzas = tuple(StanzaInfo(s.type_name, _stanzas.key_id(s)) for s in header.stanzas)
    return ContainerInfo(
        version=header.version,
        suite=_container.SUITE_NAMES[header.suite],
        stanzas=stanzas,
        metadata=dict(header.metadata.get("user", {})),
        array=header.metadata.get("array"),
        content_type=header.metadata.get("content_type"),
        header_size=header.size,
        plaintext_size=None if message_size is None else _layout.message_plaintext_size(message_size),
        tensor=header.metadata.get("tensor"),
    )
