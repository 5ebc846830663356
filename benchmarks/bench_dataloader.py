#!/usr/bin/env python3
"""Training-input benchmark: one DataLoader epoch over encrypted WebDataset shards.

On the same samples (``--gib`` GiB of ``--sample-kib`` KiB random-byte samples, 1 GiB of
100 KiB samples by default, each with a small ``cls`` field too) it times one epoch of a
``torch.utils.data.DataLoader`` (batch_size=None, ``--workers`` fork workers, default 2) over:

* **plaintext**: the tar shards unencrypted, read by the same ``EncryptedWebDataset`` code
  with decryption taken out (its shard opener returns a plain buffered file): the baseline;
* **shardseal**: the same shards written by ``shardseal.data.write_webdataset_shards`` and read
  by ``shardseal.data.EncryptedWebDataset`` (key from a key file, ``KeyFile``);
* **Fernet per sample**: each field of each sample encrypted on its own with
  ``cryptography.fernet`` (as litdata encrypts), in plaintext tar shards, decrypted per sample
  in the workers by the same reader.

Each variant runs one untimed epoch first that checks every sample (its CRC-32 against the
one computed when the data was generated, and the sample count), then ``--epochs`` timed
epochs (default 3), interleaved across the variants; the table shows the median. The data
lives in ``--dir`` (default /dev/shm, else the temporary folder) and is removed at the end.

Run it as ``python benchmarks/bench_dataloader.py [--gib 1] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import zlib
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shardseal  # noqa: E402
from shardseal import keyfile  # noqa: E402
from shardseal.data import SHARD_READ_BUFFER, EncryptedWebDataset, write_webdataset_shards  # noqa: E402
from shardseal.keyref import KeyFile, RawKey  # noqa: E402

from _common import CpuMonitor, core_count, cpu_model, load_average  # noqa: E402

try:
    import torch
    from torch.utils.data import DataLoader
except ImportError:  # pragma: no cover
    sys.exit('bench_dataloader.py needs PyTorch: pip install "shardseal[torch]"')

try:
    import cryptography
    from cryptography.fernet import Fernet
except ImportError:  # pragma: no cover - shardseal depends on cryptography
    cryptography = Fernet = None

GIB = 2**30
TARGET_OVERHEAD = 0.15
SEED = 20250101


# --------------------------------------------------------------------------------------
# Data


def sample_sizes(total: int, sample_bytes: int) -> int:
    return max(1, total // sample_bytes)


def generate_samples(count: int, sample_bytes: int, transform: Optional[Callable[[bytes], bytes]] = None):
    """The benchmark's samples, the same bytes on every call (one seeded generator)."""
    rng = np.random.default_rng(SEED)
    for i in range(count):
        payload = rng.bytes(sample_bytes)
        label = str(i % 1000).encode()
        if transform is not None:
            payload, label = transform(payload), transform(label)
        yield {"__key__": f"{i:08d}", "bin": payload, "cls": label}


def write_plain_shards(samples, pattern: str, per_shard: int) -> list:
    """Plaintext tar shards with the same members and grouping as write_webdataset_shards."""
    paths, tar, count = [], None, 0
    for sample in samples:
        if tar is None or count == per_shard:
            if tar is not None:
                tar.close()
            paths.append(pattern % len(paths))
            tar = tarfile.open(paths[-1], "w", format=tarfile.PAX_FORMAT)
            count = 0
        for ext in ("bin", "cls"):
            info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
            info.size = len(sample[ext])
            info.mode = 0o444
            tar.addfile(info, io.BytesIO(sample[ext]))
        count += 1
    if tar is not None:
        tar.close()
    return paths


class PlainWebDataset(EncryptedWebDataset):
    """EncryptedWebDataset's code path minus the decryption: shards are plain tar files."""

    def _open_shard(self, url: str):
        return open(url, "rb", buffering=SHARD_READ_BUFFER)


class FernetDecode:
    """Decrypts each field of a sample with Fernet (one token per field, as litdata does)."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._fernet = None

    def __call__(self, sample: dict) -> dict:
        if self._fernet is None:
            self._fernet = Fernet(self.key)
        return {k: (v if k.startswith("__") else self._fernet.decrypt(v)) for k, v in sample.items()}

    def __getstate__(self):
        return {"key": self.key, "_fernet": None}


# --------------------------------------------------------------------------------------
# Timing


def run_epoch(dataset, workers: int, check: Optional[dict] = None) -> tuple:
    """One epoch: (seconds, samples, payload bytes, other processes' CPU share)."""
    monitor = CpuMonitor(core_count())
    loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                        multiprocessing_context="fork" if workers else None)
    count = nbytes = 0
    start = time.perf_counter()
    iterator = iter(loader)
    for sample in iterator:
        count += 1
        nbytes += len(sample["bin"])
        if check is not None:
            expected = check.get(sample["__key__"])
            got = (zlib.crc32(sample["bin"]), zlib.crc32(sample["cls"]))
            if got != expected:
                raise RuntimeError(f"sample {sample['__key__']} differs from the generated data")
    del iterator  # joins the workers (inside the timing: they are part of an epoch)
    seconds = time.perf_counter() - start
    others = monitor.others_share()
    return seconds, count, nbytes, others


def fmt_share(share: Optional[float]) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def pick_dir(requested: Optional[str], needed: int) -> str:
    candidates = [requested] if requested else ["/dev/shm", tempfile.gettempdir()]
    for folder in candidates:
        try:
            if shutil.disk_usage(folder).free > needed * 1.2:
                return folder
        except OSError:
            continue
    if requested:
        sys.exit(f"not enough free space in {requested} ({needed / GIB:.1f} GiB needed)")
    sys.exit(f"not enough free space for {needed / GIB:.1f} GiB of shards in {candidates}")


# --------------------------------------------------------------------------------------


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="payload per epoch (default 1 GiB)")
    parser.add_argument("--sample-kib", type=int, default=100, help="bytes per sample, KiB (default 100)")
    parser.add_argument("--shard-mib", type=int, default=64, help="shard size, MiB (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant (default 3)")
    parser.add_argument("--dir", default=None, help="where to put the shards (default /dev/shm)")
    parser.add_argument("--no-fernet", action="store_true", help="skip the Fernet variant")
    args = parser.parse_args(argv)

    sample_bytes = args.sample_kib * 1024
    count = sample_sizes(int(args.gib * GIB), sample_bytes)
    per_shard = max(1, args.shard_mib * 2**20 // sample_bytes)
    payload = count * sample_bytes
    use_fernet = not args.no_fernet and Fernet is not None
    needed = int(payload * (2 + (1.4 if use_fernet else 0)))
    root = tempfile.mkdtemp(prefix="shardseal-bench-dataloader-", dir=pick_dir(args.dir, needed))
    load_before = load_average()
    try:
        return _run(args, root, count, sample_bytes, per_shard, use_fernet, load_before)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(args, root: str, count: int, sample_bytes: int, per_shard: int, use_fernet: bool,
         load_before: str) -> int:
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    key = shardseal.generate_key()
    key_path = os.path.join(root, "bench.key")
    keyfile.write_key_file(key_path, key)

    log(f"generating {count} samples of {sample_bytes} bytes in {root} ...")
    check = {s["__key__"]: (zlib.crc32(s["bin"]), zlib.crc32(s["cls"]))
             for s in generate_samples(count, sample_bytes)}
    t = time.perf_counter()
    plain_paths = write_plain_shards(generate_samples(count, sample_bytes),
                                     os.path.join(root, "plain-%05d.tar"), per_shard)
    log(f"  plaintext shards: {len(plain_paths)} in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    sealed_paths = write_webdataset_shards(generate_samples(count, sample_bytes),
                                           os.path.join(root, "sealed-%05d.tar.sseal"), KeyFile(key_path),
                                           max_samples_per_shard=per_shard, max_bytes_per_shard=2**40)
    log(f"  shardseal shards: {len(sealed_paths)} in {time.perf_counter() - t:.1f} s "
        "(write_webdataset_shards)")
    variants = [
        ("plaintext tar (same reader, no decryption)",
         PlainWebDataset(plain_paths, RawKey(bytes(32), allow_pickle=True))),
        ("shardseal EncryptedWebDataset (KeyFile)", EncryptedWebDataset(sealed_paths, KeyFile(key_path))),
    ]
    if use_fernet:
        fernet_key = Fernet.generate_key()
        fernet = Fernet(fernet_key)
        t = time.perf_counter()
        fernet_paths = write_plain_shards(generate_samples(count, sample_bytes, fernet.encrypt),
                                          os.path.join(root, "fernet-%05d.tar"), per_shard)
        log(f"  Fernet shards: {len(fernet_paths)} in {time.perf_counter() - t:.1f} s")
        variants.append(("Fernet per sample (cryptography.fernet)",
                         PlainWebDataset(fernet_paths, RawKey(bytes(32), allow_pickle=True),
                                         decode=FernetDecode(fernet_key))))
    sizes = {name: sum(os.path.getsize(p) for p in ds.urls) for name, ds in variants}

    for name, dataset in variants:
        log(f"checking every sample: {name} ...")
        seconds, n, _, _ = run_epoch(dataset, args.workers, check)
        if n != count:
            raise RuntimeError(f"{name}: {n} samples, expected {count}")
        log(f"  ok, {seconds:.2f} s (untimed)")

    times: dict = {name: [] for name, _ in variants}
    others: dict = {name: [] for name, _ in variants}
    for epoch in range(args.epochs):
        order = variants[epoch % len(variants):] + variants[: epoch % len(variants)]
        for name, dataset in order:
            seconds, n, nbytes, share = run_epoch(dataset, args.workers)
            if n != count or nbytes != count * sample_bytes:
                raise RuntimeError(f"{name}: {n} samples / {nbytes} bytes in an epoch")
            times[name].append(seconds)
            if share is not None:
                others[name].append(share)
            log(f"  epoch {epoch + 1}: {name}: {seconds:.2f} s")

    payload = count * sample_bytes
    base = statistics.median(times[variants[0][0]])
    print("## DataLoader epoch over encrypted WebDataset shards\n")
    print(f"- CPU: {cpu_model()}, {core_count()} cores available; {platform.system()} {platform.release()}")
    print(f"- Python {platform.python_version()}, torch {torch.__version__}, shardseal {shardseal.__version__} "
          f"({shardseal.backend} backend), cryptography {getattr(cryptography, '__version__', 'n/a')}")
    print(f"- data: {count} samples x {sample_bytes // 1024} KiB random bytes (+ a `cls` field) = "
          f"{payload / GIB:.2f} GiB per epoch, {len(plain_paths)} shards of {per_shard} samples, in {root.rsplit('/', 1)[0]}")
    print(f"- DataLoader(batch_size=None, num_workers={args.workers}, multiprocessing_context='fork'); "
          f"median of {args.epochs} epochs (worker start-up included), after one untimed checking epoch each")
    print(f"- load average before: {load_before}; after: {load_average()}\n")
    print("| variant | stored GiB | epoch s (each) | median s | GB/s | vs plaintext | other CPU |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, _ in variants:
        median = statistics.median(times[name])
        each = ", ".join(f"{s:.2f}" for s in times[name])
        overhead = "baseline" if name == variants[0][0] else f"{100 * (median / base - 1):+.1f}%"
        share = fmt_share(statistics.median(others[name])) if others[name] else "n/a"
        print(f"| {name} | {sizes[name] / GIB:.2f} | {each} | {median:.2f} | {payload / median / 1e9:.2f} | "
              f"{overhead} | {share} |")
    sealed = statistics.median(times[variants[1][0]])
    overhead = sealed / base - 1
    verdict = "PASS" if overhead <= TARGET_OVERHEAD else "FAIL"
    print(f"\nshardseal overhead vs plaintext: {100 * overhead:+.1f}% "
          f"(target <= {100 * TARGET_OVERHEAD:.0f}%): {verdict}")
    if use_fernet:
        fernet = statistics.median(times[variants[2][0]])
        print(f"Fernet per sample: {fernet / sealed:.2f}x the shardseal epoch time")
    print("(\"other CPU\": the share of all cores used by other processes during an epoch, from "
          "/proc/stat; anything above a few percent makes the ratios unreliable.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
