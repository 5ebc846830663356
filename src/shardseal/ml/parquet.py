"""Parquet Modular Encryption (PME) with shardseal keys (the ``parquet`` extra: pyarrow).

PME encrypts each column chunk (and the footer) of a Parquet file with AES-GCM under data
keys that pyarrow generates; a *KMS client* wraps those data keys under *master keys*.
``ShardsealKmsClient`` is that client: a master key identifier names shardseal recipients, and
a wrapped key is a small shardseal container that seals the data key (or pyarrow's
key-encryption key, with double wrapping) for them, bound to the master key identifier.

    >>> import shardseal.parquet as sp
    >>> sp.write_table(table, "data.parquet", footer_key="keyring:ring.json#footer",
    ...                column_keys={"keyring:ring.json#pii": ["email", "phone"]})
    >>> sp.read_table("data.parquet", identities=[shardseal.keyring.Keyring.load("ring.json")])

A master key identifier is either a key of the ``master_keys`` mapping (an alias such as
``"pii"`` that maps to one or several recipients) or itself a recipient string:
``ssealx1...`` (X25519), ``keyring:PATH`` / ``keyring:PATH#NAME``, ``pkcs11:token=...;object=...``
or ``aws-kms:KEY``. Identifiers are stored in the file's key material in clear: an alias keeps
key paths and ARNs out of the file, and lets ``rotate_master_keys`` move an alias to new
recipients.

What PME authenticates, what it does not, and how it compares with a whole-file shardseal
container: docs/parquet.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from .. import _redact
from ..container import blob as _blob
from ..errors import AuthenticationError, FormatError, KeyNotFoundError, KeySpecError, ShardsealError
from ..keys import specs as _specs
from ..keys.envelope import Identity, Recipient

if TYPE_CHECKING:
    import pyarrow

try:
    import pyarrow as _pa
    import pyarrow.parquet.encryption as _pe
except ImportError as _exc:  # pragma: no cover - the extra is missing
    raise ImportError("shardseal.parquet needs pyarrow: pip install 'shardseal[parquet]'") from _exc

__all__ = [
    "ALGORITHMS",
    "KEY_MATERIAL_PREFIX",
    "METADATA_KEY",
    "ParquetAuthenticationError",
    "ShardsealKmsClient",
    "crypto_factory",
    "dataset",
    "decryption_properties",
    "encryption_configuration",
    "encryption_properties",
    "has_external_key_material",
    "master_key_id",
    "master_key_name",
    "read_dataset",
    "read_table",
    "recover_interrupted_rotation",
    "rotate_master_keys",
    "write_dataset",
    "write_table",
]

# The header metadata field of a wrapped key: the master key identifier it was wrapped for.
METADATA_KEY = "parquet_master_key_id"
# PME's two algorithms: AES_GCM_V1 authenticates every module (page headers and data);
# AES_GCM_CTR_V1 authenticates only the metadata (page data is AES-CTR, unauthenticated).
ALGORITHMS = ("AES_GCM_V1", "AES_GCM_CTR_V1")
# pyarrow's name for the external key material file of FILE: KEY_MATERIAL_PREFIX + FILE + ".json".
KEY_MATERIAL_PREFIX = "_KEY_MATERIAL_FOR_"
# pyarrow's rotation writes the new key material under this prefix, deletes the old file, then
# renames the new one into place.
_TEMP_KEY_MATERIAL_PREFIX = "_TMP" + KEY_MATERIAL_PREFIX
_DATA_KEY_SIZES = (16, 24, 32)
# pyarrow parses column keys from a "id:col,col;id:col" string, so an identifier holding one
# of these characters (keyring:, pkcs11: and aws-kms: strings all do) is stored encoded.
_RESERVED_CHARS = frozenset(":;, ")
_ENCODED_PREFIX = "sseal-b64-"
# Recipient strings (public by nature), shown in messages as they are.
_PUBLIC_PREFIXES = ("ssealx1", "keyring:", "pkcs11:", "aws-kms:")
# Phrases of pyarrow (libparquet 26) errors that mean a module failed AES-GCM authentication
# or the footer signature did not verify: a tampered, truncated or mixed-up file.
_AUTH_FAILURE_PHRASES = (
    "Failed decryption finalization",
    "signature verification failed",
    "Invalid footer encryption signature",
    "Bloom filter bitset decryption failed",
    "Cannot decrypt buffer with length",
)

# What the recipient and identity arguments take (see ShardsealKmsClient).
RecipientLike = Union[Recipient, str]
MasterKeys = Mapping[str, Union[RecipientLike, Sequence[RecipientLike]]]
IdentityLike = Union[Identity, str]
Identities = Union[IdentityLike, Iterable[IdentityLike]]
PathLike = Union[str, "os.PathLike[str]"]


class ParquetAuthenticationError(AuthenticationError, OSError):
    """pyarrow found a Parquet module (page, page header, column metadata or footer) that does
    not authenticate: the file was tampered with, truncated, or mixes parts of other files.

    Also an ``OSError``, the class pyarrow raises for it. The message names the file and quotes
    pyarrow's reason (which holds no key material).
    """

    def __init__(self, message: str) -> None:
        AuthenticationError.__init__(self, message)


# A stub gap: pyarrow ships no type information, so KmsClient is Any to mypy.
class ShardsealKmsClient(_pe.KmsClient):  # type: ignore[misc]
    """A pyarrow ``KmsClient`` whose master keys are shardseal recipients and identities.

    ``wrap_key`` seals a data key (or a key-encryption key) in a shardseal container for the
    master key's recipients, with the master key identifier in the container's authenticated
    metadata, and returns it base64-encoded. ``unwrap_key`` checks the identifier and opens
    the container with the configured identities.

    Args:
        master_keys: aliases: master key identifier -> recipient(s) (``Recipient`` objects or
            recipient strings). An identifier not in the mapping must itself be a recipient
            string (``ssealx1...``, ``keyring:PATH[#NAME]``, ``pkcs11:...``, ``aws-kms:KEY``).
        identities: what unwraps: ``Identity`` objects (``keyring.Keyring``,
            ``x25519.X25519Identity``, ``pkcs11.Pkcs11Key``, ``kms.KmsIdentity``) or identity
            strings (an identity or keyring file path, ``pkcs11:...``, ``aws-kms[:KEY]``).

    Raises:
        TypeError: master_keys is not a mapping.
        KeySpecError, KeyLoadError: an identity string that names nothing usable.
    """

    def __init__(self, master_keys: Optional[MasterKeys] = None, identities: Optional[Identities] = None) -> None:
        super().__init__()
        if master_keys is not None and not isinstance(master_keys, Mapping):
            raise TypeError(f"master_keys must be a mapping, not {type(master_keys).__name__}")
        self._master_keys = dict(master_keys or {})
        self._identities = _identity_list(identities)
        self._recipients: dict[str, tuple[Recipient, ...]] = {}

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        """Seals key_bytes for the recipients of master_key_identifier.

        Returns:
            base64 of a shardseal container (ASCII), which pyarrow stores in the key material.

        Raises:
            KeySpecError, KeyLoadError: the identifier is no alias and no usable recipient string.
            KmsError, HsmError: the KMS or HSM refused to wrap.
        """
        sealed = _blob.encrypt(key_bytes, recipients=self._recipients_for(master_key_identifier),
                               metadata={METADATA_KEY: master_key_identifier}, threads=1)
        return base64.b64encode(sealed).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        """Opens a key wrapped by ``wrap_key`` for master_key_identifier.

        Raises:
            FormatError: wrapped_key is not a base64 shardseal container of a data key.
            AuthenticationError: it was wrapped for another master key, or was tampered with.
            KeyNotFoundError: no configured identity opens it (its ``key_ids`` name those that
                would).
            KmsError, HsmError: the KMS or HSM refused to unwrap.
        """
        container = _decode_wrapped_key(wrapped_key, master_key_identifier)
        info = _blob.inspect(container)
        if info.metadata.get(METADATA_KEY) != master_key_identifier:
            # Checked before any key is used; decrypt below authenticates this same metadata.
            raise AuthenticationError(f"the wrapped key of Parquet master key {_shown_id(master_key_identifier)} "
                                      "was wrapped for another master key")
        key_ids: Optional[tuple[str, ...]] = None
        if not self._identities:
            key_ids = tuple(stanza.key_id for stanza in info.stanzas)
        else:
            try:
                data_key = _blob.decrypt(container, identities=self._identities, threads=1)
            except KeyNotFoundError as exc:
                key_ids = exc.key_ids
        if key_ids is not None:
            # Raised outside the except block: no chained context.
            raise KeyNotFoundError(f"no identity given opens the wrapped key of Parquet master key "
                                   f"{_shown_id(master_key_identifier)} (it opens with key ids "
                                   f"{', '.join(key_ids) or 'none'})", key_ids)
        if len(data_key) not in _DATA_KEY_SIZES:
            raise FormatError(f"the wrapped key of Parquet master key {_shown_id(master_key_identifier)} holds "
                              f"{len(data_key)} bytes, not a 16, 24 or 32-byte AES key")
        return data_key

    def _recipients_for(self, master_key_identifier: str) -> tuple[Recipient, ...]:
        cached = self._recipients.get(master_key_identifier)
        if cached is None:
            cached = _resolve_master_key(self._master_keys, master_key_identifier)
            self._recipients[master_key_identifier] = cached
        return cached

    def __repr__(self) -> str:
        return (f"ShardsealKmsClient(master_keys={sorted(self._master_keys)!r}, "
                f"identities={len(self._identities)})")

    def __reduce__(self) -> Any:
        raise TypeError("ShardsealKmsClient holds identities and is not picklable")


def master_key_id(name: str) -> str:
    """The master key identifier stored in the file (and given to pyarrow) for name, an alias or
    a recipient string.

    pyarrow splits its column key property on ``:``, ``;`` and ``,``, so a name holding one of
    them (``keyring:PATH``, ``pkcs11:...``, ``aws-kms:...``) becomes ``sseal-b64-`` and the
    URL-safe base64 of the name; other names stay as they are. ``write_table``,
    ``encryption_configuration`` and ``ShardsealKmsClient`` do this themselves; call it only to
    build a pyarrow ``EncryptionConfiguration`` by hand. The encoding hides nothing.

    Raises:
        TypeError: name is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("a master key identifier must be a non-empty string")
    if name.startswith(_ENCODED_PREFIX) or not _RESERVED_CHARS.intersection(name):
        return name
    return _ENCODED_PREFIX + base64.urlsafe_b64encode(name.encode("utf-8")).rstrip(b"=").decode("ascii")


def master_key_name(identifier: str) -> str:
    """The alias or recipient string a master key identifier stands for (undoes ``master_key_id``)."""
    if isinstance(identifier, str) and identifier.startswith(_ENCODED_PREFIX):
        encoded = identifier[len(_ENCODED_PREFIX):]
        try:
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            return identifier
    return identifier


def crypto_factory(master_keys: Optional[MasterKeys] = None,
                   identities: Optional[Identities] = None) -> "_pe.CryptoFactory":
    """A pyarrow ``CryptoFactory`` whose KMS clients are ``ShardsealKmsClient(master_keys,
    identities)``, for pyarrow's own encryption APIs (``pyarrow.dataset``, ``ParquetWriter``).

    pyarrow caches unwrapped keys per factory (``cache_lifetime``, 10 minutes by default): make
    a new factory for each set of identities.

    Raises:
        TypeError, KeySpecError, KeyLoadError: as ``ShardsealKmsClient``.
    """
    client_args = (dict(master_keys or {}), _identity_list(identities))  # checked now, not at first use
    return _pe.CryptoFactory(lambda _connection_config: ShardsealKmsClient(*client_args))


def encryption_configuration(*, footer_key: str, column_keys: Optional[Mapping[str, Sequence[str]]] = None,
                             plaintext_footer: bool = False, algorithm: str = "AES_GCM_V1",
                             double_wrapping: bool = True, external_key_material: bool = False,
                             data_key_bits: int = 256,
                             cache_lifetime: Optional[float] = None) -> "_pe.EncryptionConfiguration":
    """pyarrow's ``EncryptionConfiguration`` with shardseal's defaults and argument checks.

    Args:
        footer_key: master key identifier of the footer key (and of every column when
            column_keys is None: uniform encryption).
        column_keys: master key identifier -> the columns it encrypts; other columns stay in
            clear. None encrypts every column with the footer key.
        plaintext_footer: leave the footer (schema, row counts, statistics) readable without
            keys; it is then only signed with the footer key, and readers without the key do
            not check the signature.
        algorithm: ``"AES_GCM_V1"`` (every module authenticated, the default) or
            ``"AES_GCM_CTR_V1"`` (page data in unauthenticated AES-CTR; see docs/parquet.md).
        double_wrapping: data keys are wrapped by local key-encryption keys, which the master
            keys wrap: one KMS/HSM call per master key, not per column.
        external_key_material: keep the wrapped keys in a ``_KEY_MATERIAL_FOR_<file>.json``
            file beside the Parquet file instead of in it: needed by ``rotate_master_keys``.
        data_key_bits: 128, 192 or 256 (pyarrow's default is 128; shardseal's is 256).
        cache_lifetime: seconds pyarrow caches keys; None keeps pyarrow's default.

    Raises:
        TypeError: column_keys is not a mapping of lists of column names.
        ValueError: an unknown algorithm or data key size.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {_redact.shown(algorithm)}")
    if data_key_bits not in (128, 192, 256) or isinstance(data_key_bits, bool):
        raise ValueError(f"data_key_bits must be 128, 192 or 256, got {_redact.shown(data_key_bits)}")
    if not isinstance(footer_key, str) or not footer_key:
        raise TypeError("footer_key must be a master key identifier (a non-empty string)")
    footer_key = master_key_id(footer_key)
    options: dict[str, Any] = dict(plaintext_footer=bool(plaintext_footer), encryption_algorithm=algorithm,
                                   double_wrapping=bool(double_wrapping),
                                   internal_key_material=not external_key_material,
                                   data_key_length_bits=data_key_bits)
    if cache_lifetime is not None:
        import datetime
        options["cache_lifetime"] = datetime.timedelta(seconds=cache_lifetime)
    if column_keys is None:
        return _pe.EncryptionConfiguration(footer_key, uniform_encryption=True, **options)
    return _pe.EncryptionConfiguration(footer_key, column_keys=_check_column_keys(column_keys), **options)


def encryption_properties(path: Optional[PathLike] = None, *, footer_key: str,
                          column_keys: Optional[Mapping[str, Sequence[str]]] = None,
                          master_keys: Optional[MasterKeys] = None, filesystem: Any = None,
                          **options: Any) -> Any:
    """pyarrow ``FileEncryptionProperties`` for one file (``pq.write_table(...,
    encryption_properties=...)``, ``pq.ParquetWriter``). path is needed with
    ``external_key_material=True`` (where the key material file goes).

    Args:
        path: the Parquet file to be written.
        footer_key: as ``encryption_configuration``.
        column_keys: as ``encryption_configuration``.
        master_keys: as ``ShardsealKmsClient``.
        filesystem: a ``pyarrow.fs.FileSystem`` for the key material file.
        **options: the other arguments of ``encryption_configuration``.

    Raises:
        TypeError: bad arguments (as ``encryption_configuration``).
        ValueError: an unknown algorithm or data key size.
        KeySpecError: a master key identifier that names no recipient.
        KeyLoadError: a recipient string that names something unusable.
        KmsError: the KMS refused to wrap.
        HsmError: the HSM refused to wrap.
    """
    config = encryption_configuration(footer_key=footer_key, column_keys=column_keys, **options)
    factory = crypto_factory(master_keys)
    return factory.file_encryption_properties(_pe.KmsConnectionConfig(), config,
                                              _path_arg(path), filesystem)


def decryption_properties(path: Optional[PathLike] = None, *, identities: Identities,
                          filesystem: Any = None, factory: Optional["_pe.CryptoFactory"] = None) -> Any:
    """pyarrow ``FileDecryptionProperties`` for one file (``pq.read_table(...,
    decryption_properties=...)``, ``pq.ParquetFile``). path is needed when the file's key
    material is external.

    Args:
        path: the Parquet file.
        identities: as ``ShardsealKmsClient``.
        filesystem: a ``pyarrow.fs.FileSystem`` for the key material file.
        factory: a ``crypto_factory`` to share (and its key cache); else a new one.

    Raises:
        KeySpecError, KeyLoadError: an identity string that names nothing usable.
    """
    factory = factory or crypto_factory(identities=identities)
    return factory.file_decryption_properties(_pe.KmsConnectionConfig(), _pe.DecryptionConfiguration(),
                                              _path_arg(path), filesystem)


def write_table(table: "pyarrow.Table", where: PathLike, *, footer_key: str,
                column_keys: Optional[Mapping[str, Sequence[str]]] = None,
                master_keys: Optional[MasterKeys] = None, plaintext_footer: bool = False,
                algorithm: str = "AES_GCM_V1", double_wrapping: bool = True,
                external_key_material: bool = False, data_key_bits: int = 256,
                **write_options: Any) -> None:
    """Writes table to a PME-encrypted Parquet file, its keys wrapped for shardseal recipients.

    Args:
        table: a ``pyarrow.Table``.
        where: the file path.
        footer_key: master key identifier of the footer (see the module documentation).
        column_keys: master key identifier -> columns; None encrypts every column with the
            footer key.
        master_keys: aliases, as ``ShardsealKmsClient``.
        plaintext_footer: as ``encryption_configuration``.
        algorithm: as ``encryption_configuration``.
        double_wrapping: as ``encryption_configuration``.
        external_key_material: as ``encryption_configuration``.
        data_key_bits: as ``encryption_configuration``.
        **write_options: passed to ``pyarrow.parquet.write_table`` (compression, row_group_size...).

    Raises:
        TypeError, ValueError: bad arguments (as ``encryption_configuration``).
        KeySpecError, KeyLoadError: a master key identifier that names no recipient.
        KmsError, HsmError: the KMS or HSM refused to wrap.
    """
    import pyarrow.parquet as pq

    properties = encryption_properties(
        where, footer_key=footer_key, column_keys=column_keys, master_keys=master_keys,
        plaintext_footer=plaintext_footer, algorithm=algorithm, double_wrapping=double_wrapping,
        external_key_material=external_key_material, data_key_bits=data_key_bits)
    pq.write_table(table, _path_arg(where), encryption_properties=properties, **write_options)


def read_table(source: PathLike, *, identities: Identities, columns: Optional[Sequence[str]] = None,
               factory: Optional["_pe.CryptoFactory"] = None, **read_options: Any) -> "pyarrow.Table":
    """Reads a PME-encrypted Parquet file with shardseal identities.

    Args:
        source: the file path.
        identities: as ``ShardsealKmsClient``.
        columns: the columns to read (only their keys are unwrapped); None reads all.
        factory: a ``crypto_factory`` to share across reads (its key cache); else a new one.
        **read_options: passed to ``pyarrow.parquet.read_table`` (filters, use_threads...).

    Raises:
        KeyNotFoundError: no identity opens a needed wrapped key.
        ParquetAuthenticationError: a module of the file does not authenticate (tampered,
            truncated, or spliced from other files).
        AuthenticationError: a wrapped key was tampered with or wrapped for another master key.
        KmsError, HsmError: the KMS or HSM refused to unwrap.
        OSError: pyarrow's other errors (a missing file, a file that is not encrypted...).
    """
    import pyarrow.parquet as pq

    properties = decryption_properties(source, identities=identities, factory=factory)
    with _authentication_errors(source):
        return pq.read_table(_path_arg(source), columns=columns, decryption_properties=properties,
                             **read_options)


def write_dataset(data: Any, base_dir: PathLike, *, footer_key: str,
                  column_keys: Optional[Mapping[str, Sequence[str]]] = None,
                  master_keys: Optional[MasterKeys] = None, plaintext_footer: bool = False,
                  algorithm: str = "AES_GCM_V1", double_wrapping: bool = True,
                  external_key_material: bool = False, data_key_bits: int = 256,
                  **dataset_options: Any) -> None:
    """Writes a PME-encrypted Parquet dataset (``pyarrow.dataset.write_dataset``): every file
    gets its own data keys, wrapped for the same master keys.

    Args:
        data: what ``pyarrow.dataset.write_dataset`` takes (a table, batches, a dataset).
        base_dir: the folder.
        footer_key: as ``write_table``.
        column_keys: as ``write_table``.
        master_keys: as ``write_table``.
        plaintext_footer: as ``write_table``.
        algorithm: as ``write_table``.
        double_wrapping: as ``write_table``.
        external_key_material: as ``write_table``.
        data_key_bits: as ``write_table``.
        **dataset_options: passed to ``pyarrow.dataset.write_dataset`` (partitioning,
            max_rows_per_file, existing_data_behavior...).

    Raises:
        TypeError: bad arguments (as ``encryption_configuration``).
        ValueError: an unknown algorithm or data key size.
        KeySpecError: a master key identifier that names no recipient.
        KmsError: the KMS refused to wrap.
        HsmError: the HSM refused to wrap.
    """
    import pyarrow.dataset as ds

    config = encryption_configuration(footer_key=footer_key, column_keys=column_keys,
                                      plaintext_footer=plaintext_footer, algorithm=algorithm,
                                      double_wrapping=double_wrapping,
                                      external_key_material=external_key_material, data_key_bits=data_key_bits)
    parquet_format = ds.ParquetFileFormat()
    encryption = ds.ParquetEncryptionConfig(crypto_factory(master_keys), _pe.KmsConnectionConfig(), config)
    ds.write_dataset(data, _path_arg(base_dir), format=parquet_format,
                     file_options=parquet_format.make_write_options(encryption_config=encryption),
                     **dataset_options)


def dataset(source: Any, *, identities: Identities, **dataset_options: Any) -> Any:
    """A lazy ``pyarrow.dataset.Dataset`` over PME-encrypted files (internal key material).

    pyarrow's errors reach the caller as pyarrow raises them when the dataset is scanned
    (``read_dataset`` turns them into shardseal's). pyarrow 26 cannot scan files with external
    key material (it does not pass each file's path to the key material store): use
    ``read_dataset`` for those.

    Raises:
        KeySpecError, KeyLoadError: an identity string that names nothing usable.
    """
    import pyarrow.dataset as ds

    decryption = ds.ParquetDecryptionConfig(crypto_factory(identities=identities), _pe.KmsConnectionConfig(),
                                            _pe.DecryptionConfiguration())
    parquet_format = ds.ParquetFileFormat(
        default_fragment_scan_options=ds.ParquetFragmentScanOptions(decryption_config=decryption))
    if isinstance(source, (str, os.PathLike)):
        source = _path_arg(source)
    return ds.dataset(source, format=parquet_format, **dataset_options)


def read_dataset(base_dir: PathLike, *, identities: Identities, columns: Optional[Sequence[str]] = None,
                 filter: Any = None) -> "pyarrow.Table":
    """Reads every Parquet file under base_dir into one table, with shardseal identities.

    Files with external key material are read one by one (pyarrow 26's dataset scanner cannot
    find their key material), in sorted path order, without hive partition columns; otherwise
    the folder is read as one ``pyarrow.dataset``.

    Args:
        base_dir: the folder ``write_dataset`` wrote.
        identities: as ``ShardsealKmsClient``.
        columns: the columns to read; None reads all.
        filter: a ``pyarrow.compute.Expression`` on the rows.

    Raises:
        KeyNotFoundError: no identity opens a needed wrapped key.
        ParquetAuthenticationError: a module of a file does not authenticate.
        AuthenticationError: a wrapped key was tampered with or wrapped for another master key.
        KmsError: the KMS refused to unwrap.
        HsmError: the HSM refused to unwrap.
        OSError: pyarrow's other errors.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(base_dir)
    files = sorted(p for p in root.rglob("*.parquet") if p.is_file())
    if not any(has_external_key_material(p) for p in files):
        with _authentication_errors(root):
            return dataset(root, identities=identities).to_table(columns=columns, filter=filter)
    factory = crypto_factory(identities=identities)  # one key cache for every file
    tables = []
    for path in files:
        properties = decryption_properties(path, identities=identities, factory=factory)
        with _authentication_errors(path):
            tables.append(pq.read_table(str(path), columns=columns, filters=filter,
                                        decryption_properties=properties))
    return pa.concat_tables(tables)


def has_external_key_material(path: PathLike) -> bool:
    """Whether the Parquet file at path has its key material in a file beside it."""
    path = Path(path)
    return path.with_name(f"{KEY_MATERIAL_PREFIX}{path.name}.json").is_file()


def rotate_master_keys(path: PathLike, *, identities: Identities, master_keys: Optional[MasterKeys] = None,
                       double_wrapping: bool = True) -> list[str]:
    """Re-wraps the keys of PME files written with ``external_key_material=True``.

    For each file, pyarrow (``CryptoFactory.rotate_master_keys``) unwraps every key in its key
    material file with identities, wraps it again for the master key's *current* recipients
    (master_keys, or the identifier itself as a recipient string: ``keyring:PATH`` wraps with
    the keyring's newest active key), and replaces the key material file. The Parquet files and
    their data keys do not change: see docs/parquet.md for what rotation does and does not
    revoke.

    Args:
        path: a Parquet file, or a folder whose ``*.parquet`` files (searched recursively) are
            all rotated.
        identities: what unwraps the current key material (as ``ShardsealKmsClient``).
        master_keys: where each master key identifier now points (as ``ShardsealKmsClient``).
        double_wrapping: wrap new local key-encryption keys (True) or the data keys themselves.

    Returns:
        The paths of the files whose key material was rotated.

    Raises:
        ValueError: the file, or any ``*.parquet`` file of the folder, has its key material
            inside (written without ``external_key_material=True``, or not by PME at all);
            nothing is rotated then. Re-encrypt such files with read_table and write_table.
        FileNotFoundError: path does not exist.
        KeyNotFoundError, AuthenticationError, KmsError, HsmError: as ``ShardsealKmsClient``.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no such file or folder: {str(root)!r}")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*.parquet") if p.is_file())
    for file in files:
        recover_interrupted_rotation(file)
    internal = [p for p in files if not has_external_key_material(p)]
    if internal:
        # Checked before any file changes: a half-rotated folder would keep the old keys valid.
        shown = ", ".join(repr(str(p)) for p in internal[:3]) + (", ..." if len(internal) > 3 else "")
        raise ValueError(f"{len(internal)} Parquet file(s) have no external key material ({shown}): PME rotation "
                         "re-wraps only key material kept beside the file (write with "
                         "external_key_material=True); re-encrypt those instead")
    factory = crypto_factory(master_keys, identities)
    for file in files:
        factory.rotate_master_keys(_pe.KmsConnectionConfig(), str(file), double_wrapping=bool(double_wrapping),
                                   cache_lifetime_seconds=60)
    return [str(p) for p in files]


def recover_interrupted_rotation(path: PathLike) -> bool:
    """Finishes or undoes a rotation of path's key material that was interrupted.

    pyarrow's rotation saves the new key material as ``_TMP_KEY_MATERIAL_FOR_<file>.json``,
    deletes the old file and renames the new one into place. A crash after the deletion
    leaves only the complete new file: it is renamed into place. A crash before it leaves
    both: the new one may be incomplete and is deleted (the old one still opens the file).
    ``rotate_master_keys`` calls this for every file first.

    Returns:
        Whether anything was left over from an interrupted rotation.
    """
    path = Path(path)
    current = path.with_name(f"{KEY_MATERIAL_PREFIX}{path.name}.json")
    temporary = path.with_name(f"{_TEMP_KEY_MATERIAL_PREFIX}{path.name}.json")
    if not temporary.is_file():
        return False
    if current.is_file():
        temporary.unlink()
    else:
        os.replace(temporary, current)
    return True


@contextlib.contextmanager
def _authentication_errors(source: Any) -> Iterator[None]:
    """Turns pyarrow's authentication failures into ParquetAuthenticationError."""
    try:
        yield
    except (OSError, _pa.ArrowException) as exc:  # a bad footer signature is an ArrowInvalid
        if isinstance(exc, ShardsealError) or not any(p in str(exc) for p in _AUTH_FAILURE_PHRASES):
            raise
        reason = " ".join(str(exc).split())
        raise ParquetAuthenticationError(
            f"the Parquet file {_shown_source(source)} does not authenticate (tampered with, truncated, "
            f"or parts of another file): pyarrow: {reason}") from exc


def _resolve_master_key(master_keys: Mapping[str, Any], identifier: str) -> tuple[Recipient, ...]:
    name = master_key_name(identifier)
    if name in master_keys or identifier in master_keys:
        value = master_keys[name] if name in master_keys else master_keys[identifier]
        items = [value] if isinstance(value, (str, Recipient)) else list(value)
        if not items:
            raise ValueError(f"master_keys[{_shown_id(identifier)}] names no recipient")
        return tuple(_recipient(item) for item in items)
    try:
        return (_specs.parse_recipient(name),)
    except KeySpecError:
        pass
    raise KeySpecError(f"Parquet master key {_shown_id(identifier)} is not in master_keys and is not a recipient "
                       "string (ssealx1..., keyring:PATH[#NAME], pkcs11:token=...;object=..., aws-kms:KEY)")


def _recipient(item: Any) -> Recipient:
    if isinstance(item, Recipient):
        return item
    if isinstance(item, str):
        return _specs.parse_recipient(item)
    raise TypeError(f"a master key's recipients must be Recipient objects or recipient strings, "
                    f"not {type(item).__name__}")


def _identity_list(identities: Optional[Identities]) -> tuple[Identity, ...]:
    if identities is None:
        return ()
    items = [identities] if isinstance(identities, (str, Identity)) else list(identities)
    result = []
    for item in items:
        if isinstance(item, str):
            item = _specs.load_identity(item)
        if not isinstance(item, Identity):
            raise TypeError(f"identities must be Identity objects or identity strings, not {type(item).__name__}")
        result.append(item)
    return tuple(result)


def _check_column_keys(column_keys: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if not isinstance(column_keys, Mapping):
        raise TypeError(f"column_keys must map master key identifiers to column names, "
                        f"not {type(column_keys).__name__}")
    checked = {}
    for identifier, columns in column_keys.items():
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise TypeError(f"column_keys[{_shown_id(identifier)}] must be a list of column names")
        checked[master_key_id(identifier)] = list(columns)
    return checked


def _decode_wrapped_key(wrapped_key: Any, identifier: str) -> bytes:
    try:
        text = wrapped_key.decode("ascii") if isinstance(wrapped_key, bytes) else wrapped_key
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, AttributeError):
        pass
    raise FormatError(f"the wrapped key of Parquet master key {_shown_id(identifier)} is not base64 "
                      "(not written by shardseal's KMS client)")


def _shown_id(identifier: Any) -> str:
    """A master key identifier for a message. Identifiers are stored in clear and recipient
    strings are public, but a secret pasted as one (or a PIN in a URI query) is never echoed."""
    if not isinstance(identifier, str):
        return _redact.shown(identifier)
    identifier = master_key_name(identifier)
    if identifier.startswith(_PUBLIC_PREFIXES) and "?" not in identifier and identifier.isprintable():
        return repr(identifier)
    return _redact.shown_argument(identifier)


def _shown_source(source: Any) -> str:
    return repr(str(source)) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def _path_arg(path: Optional[PathLike]) -> Optional[str]:
    return None if path is None else os.fspath(path)
