"""Lazy readers over encrypted shards on a Dask cluster: ``read_bag`` (one item per file)
and ``read_array`` (``.npy`` shards as one ``dask.array``), decrypted by the workers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import fsspec

from ..io.fsspec import SealFileSystem
from ._dask_common import KeyArg, key_reference

if TYPE_CHECKING:
    import dask.array
    import dask.bag
    import numpy as np

# A URL or glob, or a list of them.
URLs = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]


def read_bag(urlpath: Union[str, Sequence[str]], key: KeyArg, *,
             storage_options: Optional[Mapping[str, Any]] = None,
             allow_raw_key: bool = False) -> dask.bag.Bag:
    """A ``dask.bag`` with one item per encrypted file: its decrypted bytes.

    For lines of text, ``dask.bag.read_text("sseal::" + url, storage_options={"sseal":
    {"key": ref}})`` does the same through the ``sseal::`` file system.

    Args:
        urlpath: a glob or URL (``s3://bucket/train/*.sseal``), or a list of them.
        key: a key reference (resolved by each worker); raw keys are refused unless
            allow_raw_key.
        storage_options: fsspec options of the target file system.
        allow_raw_key: as for ``encrypt_dataset``.

    Returns:
        A lazy ``dask.bag.Bag`` of ``bytes``.

    Raises:
        TypeError: a raw key without allow_raw_key.
        FileNotFoundError: nothing matches urlpath.
    """
    import dask.bag

    fs = _sealed_fs(key, storage_options, allow_raw_key, urlpath)
    paths = _expand(fs, urlpath)
    items = [(fs, p) for p in paths]
    # dask.bag.from_sequence has no annotations.
    bag: dask.bag.Bag = dask.bag.from_sequence(  # type: ignore[no-untyped-call]
        items, npartitions=len(paths)).map(_read_whole)
    return bag


def _sealed_fs(key: KeyArg, storage_options: Optional[Mapping[str, Any]], allow_raw_key: bool,
               urlpath: URLs) -> SealFileSystem:
    first = urlpath if isinstance(urlpath, (str, os.PathLike)) else urlpath[0]
    protocol = fsspec.core.split_protocol(os.fspath(first))[0] or "file"
    target = fsspec.filesystem(protocol, **dict(storage_options or {}))
    return SealFileSystem(fs=target, key=key_reference(key, allow_raw_key))


def _expand(fs: SealFileSystem, urlpath: URLs) -> list[str]:
    urls = [urlpath] if isinstance(urlpath, (str, os.PathLike)) else list(urlpath)
    paths: list[str] = []
    for url in urls:
        url = os.fspath(url)
        matches = fs.fs.glob(url) if any(c in url for c in "*?[") else [fs.fs._strip_protocol(url)]
        paths += sorted(matches)
    if not paths:
        raise FileNotFoundError(f"nothing matches {urlpath!r}")
    return paths


def _read_whole(item: tuple[SealFileSystem, str]) -> bytes:
    fs, path = item
    with fs.open(path, "rb") as reader:
        data: bytes = reader.read()
        return data


def read_array(urlpath: Union[str, Sequence[str]], key: KeyArg, *,
               storage_options: Optional[Mapping[str, Any]] = None,
               allow_raw_key: bool = False) -> dask.array.Array:
    """A lazily decrypted ``dask.array`` over encrypted ``.npy`` shards (as
    ``shardseal.data.write_npy_shard`` writes them), concatenated along the first axis.

    The driver decrypts only each shard's ``.npy`` header (its first 16 KiB chunk) for the
    shapes and dtype; the workers decrypt the arrays when the graph is computed.

    Args:
        urlpath: a glob or URL of the shards (sorted by name), or a list of them.
        key: a key reference (resolved by each worker); raw keys are refused unless
            allow_raw_key.
        storage_options: fsspec options of the target file system.
        allow_raw_key: as for ``encrypt_dataset``.

    Returns:
        A ``dask.array.Array`` with one block per shard.

    Raises:
        TypeError: a raw key without allow_raw_key.
        ValueError: shards of different dtypes or trailing shapes; not ``.npy`` data.
        FileNotFoundError: nothing matches urlpath.
    """
    import dask.array
    from dask.delayed import delayed

    fs = _sealed_fs(key, storage_options, allow_raw_key, urlpath)
    paths = _expand(fs, urlpath)
    blocks: list[dask.array.Array] = []
    for path in paths:
        shape, dtype = _npy_header(fs, path)
        # dask.array.from_delayed and concatenate have no annotations.
        block = dask.array.from_delayed(  # type: ignore[no-untyped-call]
            delayed(_load_npy)(fs, path), shape, dtype)
        blocks.append(block)
    first_dtype = blocks[0].dtype
    if any(b.dtype != first_dtype or b.shape[1:] != blocks[0].shape[1:] for b in blocks):
        raise ValueError("the shards' dtypes or trailing shapes differ")
    if len(blocks) == 1:
        return blocks[0]
    array: dask.array.Array = dask.array.concatenate(blocks, axis=0)  # type: ignore[no-untyped-call]
    return array


def _npy_header(fs: SealFileSystem, path: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    import numpy as np

    with fs.open(path, "rb") as reader:
        try:
            version = np.lib.format.read_magic(reader)
            reader_fn = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                         else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = reader_fn(reader)
        except ValueError as exc:
            raise ValueError(f"{path} does not hold .npy data: {exc}") from None
    if fortran or dtype.hasobject:
        raise ValueError(f"{path}: Fortran-ordered or object arrays are not read here")
    return shape, dtype


def _load_npy(fs: SealFileSystem, path: str) -> np.ndarray[Any, Any]:
    import numpy as np

    with fs.open(path, "rb") as reader:
        return np.lib.format.read_array(reader, allow_pickle=False)


# Public names of shardseal.ops.dask: pickles and reprs name them there, as before the module
# was split.
read_bag.__module__ = read_array.__module__ = "shardseal.ops.dask"
