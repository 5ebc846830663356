#!/usr/bin/env python3
"""Encrypted safetensors against plain safetensors, on one >= 1 GiB model file.

Measures, in one run (median, min and max of --repeat runs):

* ``shardseal.safetensors.load_file`` of the encrypted file versus
  ``safetensors.torch.load_file`` of the plaintext file, each followed by reading every
  tensor once (safetensors maps the file lazily, so an unread load would time nothing);
* ``shardseal.safetensors.safe_open(...).get_tensor`` of one 4 MiB tensor (open included),
  versus ``safetensors.safe_open(...).get_tensor`` on the plaintext.

Every loaded state dict is compared once with the original tensors.
Targets (issue 5): encrypted load_file within 2x of safetensors; get_tensor of 4 MiB < 20 ms.

Run: ``python benchmarks/bench_safetensors.py [--gib 1] [--repeat 5] [--dir /dev/shm]``, and
with ``--cold --dir /var/tmp`` for a disk with the page cache dropped before every run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open as plain_safe_open
from safetensors.torch import load_file as plain_load_file
from safetensors.torch import save_file as plain_save_file

import shardseal
import shardseal.safetensors as sealed

from _common import core_count, cpu_model, load_average

TENSOR_BYTES = 4 * 2**20  # every tensor is 4 MiB: 1024 x 1024 float32


def make_state_dict(total_bytes: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    count = max(1, total_bytes // TENSOR_BYTES)
    return {f"layer{i:04d}.weight": torch.randn(1024, 1024, generator=generator) for i in range(count)}


def touch(tensors: dict) -> float:
    """Reads every byte of every tensor, as loading weights into a model does (safetensors
    maps the file lazily, so a load that is not read would time nothing)."""
    return float(sum(t.sum() for t in tensors.values()))


def drop_page_cache() -> bool:
    """Empties the page cache (root only) so that the files are read from the disk."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(run, repeat: int, cold: bool = False) -> list:
    seconds = []
    for _ in range(repeat):
        if cold:
            drop_page_cache()
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(label: str, seconds: list, scale: float, unit: str) -> str:
    values = sorted(s * scale for s in seconds)
    return f"| {label} | {statistics.median(values):.1f} | {values[0]:.1f} | {values[-1]:.1f} | {unit} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="model size in GiB (default 1)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm", help="where to put the files (default /dev/shm)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before every run (root; use a --dir on disk)")
    args = parser.parse_args()
    if args.cold and not drop_page_cache():
        parser.error("--cold needs permission to write /proc/sys/vm/drop_caches")

    key = shardseal.generate_key()
    tensors = make_state_dict(int(args.gib * 2**30))
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    name = sorted(tensors)[len(tensors) // 2]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="shardseal-bench-st-") as folder:
        plain, encrypted = Path(folder) / "model.safetensors", Path(folder) / "model.safetensors.sseal"
        plain_save_file(tensors, plain)
        sealed.save_file(tensors, encrypted, key=key)

        # Verification, once, outside the timings.
        loaded = sealed.load_file(encrypted, key=key)
        assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
        with sealed.safe_open(encrypted, "pt", key=key) as f:
            assert torch.equal(f.get_tensor(name), tensors[name])
        del loaded

        plain_load = timed(lambda: touch(plain_load_file(plain)), args.repeat, args.cold)
        sealed_load = timed(lambda: touch(sealed.load_file(encrypted, key=key)), args.repeat, args.cold)

        def plain_one():
            with plain_safe_open(plain, framework="pt") as f:
                f.get_tensor(name)

        def sealed_one():
            with sealed.safe_open(encrypted, "pt", key=key) as f:
                f.get_tensor(name)

        plain_get = timed(plain_one, args.repeat * 4, args.cold)
        sealed_get = timed(sealed_one, args.repeat * 4, args.cold)

    print("## Encrypted safetensors\n")
    print(f"- CPU: {cpu_model()}, {core_count()} cores; shardseal {shardseal.__version__} "
          f"({shardseal.backend}), torch {torch.__version__}; load average {load_average()}")
    print(f"- model: {len(tensors)} float32 tensors of 4 MiB = {nbytes / 2**30:.2f} GiB, files in {args.dir}, "
          f"page cache {'dropped before every run' if args.cold else 'warm'}; medians of {args.repeat} runs ({args.repeat * 4} for get_tensor)\n")
    print("| measurement | median | min | max | unit |\n|---|---:|---:|---:|---|")
    print(summary("safetensors.torch.load_file (plaintext) + touch", plain_load, 1e3, "ms"))
    print(summary("shardseal.safetensors.load_file (encrypted) + touch", sealed_load, 1e3, "ms"))
    print(summary("safetensors safe_open + get_tensor 4 MiB (plaintext)", plain_get, 1e3, "ms"))
    print(summary("shardseal safe_open + get_tensor 4 MiB (encrypted)", sealed_get, 1e3, "ms"))
    ratio = statistics.median(sealed_load) / statistics.median(plain_load)
    get_ms = statistics.median(sealed_get) * 1e3
    print(f"\n- {'PASS' if ratio <= 2 else 'FAIL'}: encrypted load_file / safetensors load_file = "
          f"{ratio:.2f}x (target <= 2x)")
    print(f"- {'PASS' if get_ms < 20 else 'FAIL'}: safe_open + get_tensor of one 4 MiB tensor = "
          f"{get_ms:.1f} ms (target < 20 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
