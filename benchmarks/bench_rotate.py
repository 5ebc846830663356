#!/usr/bin/env python3
"""Key rotation benchmark: re-wrapping key blocks against re-encrypting whole files.

In a folder of ``--files`` containers of ``--mib`` MiB each (random plaintext, one fresh file
key and salt per file), made for a keyring-like recipient (``shardseal.keyring`` when it
exists, else a local AES key wrap recipient with the same stanza layout), each round measures
``shardseal.rotate`` over the whole folder:

1. **re-encrypt** (``reencrypt=True``) for a new KEK: every byte decrypted and encrypted again;
2. **rewrap in place**: old KEK -> new KEK of the same type (``add=[new], remove=[old]``): only
   the key block is written, with its journal;
3. **rewrap by copy**: a recipient added (``add=[extra]``): the key block grows, so each file
   is copied (``copy_file_range``) to a new file with the new header and renamed into place.

The round's re-encryption also resets the files to one recipient (no padding), so that every
round measures the same three operations. Each figure is the median (min, max) over
``--repeat`` rounds of wall seconds, with files/s and the bytes the rotation wrote (from its
report); the ratios compare re-encryption with each rewrap. Before each timed run ``os.sync()``
flushes the previous run's writes and the page cache is dropped where allowed (root); the table
says whether runs were cold or warm. Afterwards a sample of files is decrypted and compared
with the plaintext, and their key ids checked.

Run it as ``python benchmarks/bench_rotate.py [--files 1000] [--mib 64] [--dir /var/tmp]
[--repeat 3] [--threads N] [--keep]``. The defaults need about 63 GiB of free disk; the script
checks first and refuses when the folder's filesystem lacks the room.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import shardseal
from shardseal.keys import envelope as _envelope, stanzas as _stanzas
from shardseal.core import layout as _layout
from shardseal.ops.rotation import _human_bytes as fmt_bytes  # the report's own byte counts
from shardseal.rotation import rotate

if __package__:  # python -m benchmarks.bench_rotate
    from ._common import NCORES, CpuMonitor, cpu_model, drop_caches, load_average
else:  # python benchmarks/bench_rotate.py
    from _common import NCORES, CpuMonitor, cpu_model, drop_caches, load_average

MiB = 1 << 20
SPACE_MARGIN = 256 * MiB
VERIFY_SAMPLE = 8


# ---- recipients ---------------------------------------------------------------------------


class AesKwRecipient(_envelope.Recipient):
    """A keyring-like recipient: RFC 3394 key wrap under a 32-byte KEK, 16-byte KEK id."""

    stanza_type = _stanzas.KEYRING

    def __init__(self, kek: bytes) -> None:
        self._kek = kek
        self._id = hashlib.sha256(b"bench-rotate-kek-id" + kek).digest()[:16]

    @property
    def key_id(self) -> str:
        return self._id.hex()

    def wrap(self, file_key: bytes, context) -> bytes:
        from cryptography.hazmat.primitives.keywrap import aes_key_wrap

        return _stanzas.keyring_body(self._id, aes_key_wrap(self._kek, file_key))

    def stanza_size(self) -> int:
        return _stanzas.KEY_ID_SIZE + _stanzas.AES_KW_SIZE


class AesKwIdentities(_envelope.Identity):
    """Opens the stanzas of every AesKwRecipient made so far."""

    stanza_type = _stanzas.KEYRING

    def __init__(self) -> None:
        self._keks: dict = {}

    def add(self, recipient: AesKwRecipient) -> None:
        self._keks[recipient._id] = recipient._kek

    @property
    def key_ids(self) -> tuple:
        return tuple(kek_id.hex() for kek_id in self._keks)

    def unwrap(self, body: bytes, context):
        from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

        kek_id, wrapped = _stanzas.parse_keyring(body)
        if kek_id not in self._keks:
            return None
        try:
            return aes_key_unwrap(self._keks[kek_id], wrapped)
        except InvalidUnwrap:
            raise shardseal.AuthenticationError() from None


class Keys:
    """Makes new KEKs on demand: in a shardseal.keyring Keyring if there is one, else local."""

    def __init__(self, folder: Path, kind: str) -> None:
        self.kind = kind
        if kind == "keyring":
            from shardseal.keyring import Keyring

            self._keyring = Keyring.create(folder / "bench.keyring")
            self.identity = self._keyring
        else:
            self.identity = AesKwIdentities()

    def new(self, name: str):
        if self.kind == "keyring":
            self._keyring.add(name)
            return self._keyring.recipient(name)
        recipient = AesKwRecipient(os.urandom(32))
        self.identity.add(recipient)
        return recipient


def recipient_kind(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import shardseal.keyring  # noqa: F401
    except ImportError:
        return "local"
    return "keyring"


# ---- measuring ----------------------------------------------------------------------------


@dataclass
class Row:
    """One operation's runs."""

    name: str
    seconds: list = field(default_factory=list)
    written: list = field(default_factory=list)
    others_cpu: list = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(row: Row, run: Callable[[], object], check: Callable[[object], None], cold: bool) -> None:
    if cold:
        drop_caches()
    else:
        os.sync()
    monitor = CpuMonitor(NCORES)
    started = time.perf_counter()
    report = run()
    row.seconds.append(time.perf_counter() - started)
    row.others_cpu.append(monitor.others_share())
    row.written.append(report.bytes_written)
    check(report)


def expect(field_name: str, count: int) -> Callable[[object], None]:
    def check(report) -> None:
        if getattr(report, field_name) != count or report.failed:
            raise SystemExit(f"unexpected rotation result: {report.summary()}")
    return check


def check_space(folder: Path, files: int, mib: int) -> None:
    """Refuses to start when the files (plus one copy in flight) do not fit."""
    file_size = _layout.message_size(mib * MiB) + 4096  # the header is far smaller
    needed = files * file_size + file_size + SPACE_MARGIN
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(f"not enough free space in {folder}: {files} files of {mib} MiB need "
                         f"{needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free "
                         f"(use --dir, --files or --mib)")


def make_files(folder: Path, files: int, mib: int, recipient) -> bytes:
    plaintext = os.urandom(mib * MiB)
    for i in range(files):
        (folder / f"shard-{i:05d}.sseal").write_bytes(
            shardseal.encrypt(plaintext, recipients=[recipient], metadata={"shard": i}))
    os.sync()
    return plaintext


def verify(folder: Path, identity, plaintext: bytes, key_ids: list) -> int:
    paths = sorted(folder.glob("shard-*.sseal"))
    step = max(1, len(paths) // VERIFY_SAMPLE)
    sample = paths[::step][:VERIFY_SAMPLE] + paths[-1:]
    for path in sample:
        blob = path.read_bytes()
        found = [s.key_id for s in shardseal.inspect(blob).stanzas if s.type != "padding"]
        if found != key_ids:
            raise SystemExit(f"{path}: key ids {found}, expected {key_ids}")
        if shardseal.decrypt(blob, identities=[identity]) != plaintext:
            raise SystemExit(f"{path}: the plaintext changed")
    return len(sample)


# ---- output -------------------------------------------------------------------------------


def table(rows: list, files: int, payload: int) -> str:
    lines = ["| operation | median s | min s | max s | files/s | written per run | written / payload | others' CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        written = statistics.median(row.written)
        others = [x for x in row.others_cpu if x is not None]
        others_text = f"{max(others) * 100:.0f}%" if others else "n/a"
        lines.append(
            f"| {row.name} | {row.median:.3f} | {min(row.seconds):.3f} | {max(row.seconds):.3f} | "
            f"{files / row.median:,.0f} | {fmt_bytes(written)} | {written / payload:.2e} | {others_text} |")
    return "\n".join(lines)


def parse_args(argv: Optional[list]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="number of containers (default 1000)")
    parser.add_argument("--mib", type=int, default=64, help="plaintext MiB per container (default 64)")
    parser.add_argument("--dir", default="/var/tmp", help="folder to work in (default /var/tmp)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="threads for re-encryption (default all)")
    parser.add_argument("--recipient", choices=("auto", "keyring", "local"), default="auto",
                        help="shardseal.keyring, the local AES-KW recipient, or auto (keyring if present)")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = parser.parse_args(argv)
    if args.files < 1 or args.mib < 0 or args.repeat < 1:
        parser.error("--files and --repeat must be >= 1, --mib >= 0")
    return args


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    base = Path(args.dir)
    check_space(base, args.files, args.mib)
    folder = Path(tempfile.mkdtemp(prefix="shardseal-bench-rotate-", dir=base))
    try:
        return run(args, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder}")


def run(args: argparse.Namespace, folder: Path) -> int:
    shards = folder / "shards"
    shards.mkdir()
    keys = Keys(folder, recipient_kind(args.recipient))
    first = keys.new("r0-initial")
    started = time.perf_counter()
    plaintext = make_files(shards, args.files, args.mib, first)
    payload = sum(p.stat().st_size for p in shards.iterdir())
    cold = drop_caches()
    print(f"# shardseal rotate: {args.files} files x {args.mib} MiB in {shards} "
          f"({fmt_bytes(payload)}; made in {time.perf_counter() - started:.1f} s)")
    print(f"backend {shardseal.backend}, recipient {keys.kind}, {cpu_model()}, {NCORES} cores, "
          f"load {load_average()}, page cache {'dropped before each run (cold)' if cold else 'kept (warm)'}\n")
    rows = [Row("re-encrypt (new file key, all bytes)"), Row("rewrap in place (old KEK -> new KEK)"),
            Row("rewrap by copy (recipient added)")]
    identity = keys.identity
    for round_ in range(args.repeat):
        current = keys.new(f"r{round_ + 1}-a")
        timed(rows[0], lambda current=current: rotate(shards, identities=[identity], recipients=[current],
                                                      reencrypt=True, threads=args.threads),
              expect("files_reencrypted", args.files), cold)
        new = keys.new(f"r{round_ + 1}-b")
        timed(rows[1], lambda new=new, old=current: rotate(shards, identities=[identity], add=[new],
                                                           remove=[old.key_id]),
              expect("in_place", args.files), cold)
        extra = keys.new(f"r{round_ + 1}-c")
        timed(rows[2], lambda extra=extra: rotate(shards, identities=[identity], add=[extra]),
              expect("copied", args.files), cold)
        print(f"round {round_ + 1}: " + ", ".join(f"{row.seconds[-1]:.2f} s" for row in rows), flush=True)
    checked = verify(shards, identity, plaintext, [new.key_id, extra.key_id])
    print()
    print(table(rows, args.files, payload))
    print()
    print(f"re-encrypt / rewrap in place: {rows[0].median / rows[1].median:,.0f}x the time; "
          f"re-encrypt / rewrap by copy: {rows[0].median / rows[2].median:,.1f}x")
    print(f"verified: {checked} sampled files decrypt to the plaintext with the expected key ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
