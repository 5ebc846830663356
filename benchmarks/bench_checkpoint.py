#!/usr/bin/env python3
"""Encrypted sharded checkpoints against plain safetensors, and one tensor of a remote file.

Measures, in one run (median, min and max of --repeat runs):

* ``shardseal.checkpoint.load_checkpoint`` of a 4-shard encrypted checkpoint (sealed index)
  versus ``safetensors.torch.load_file`` of each plaintext shard, each followed by reading
  every tensor once (safetensors maps files lazily, so an unread load would time nothing);
* ``shardseal.safetensors.safe_open("sseal::http://127.0.0.1:PORT/...").get_tensor`` of one
  4 MiB tensor of a --remote-gib file served by a loopback HTTP server with range requests:
  the bytes the server sent, the number of requests, and the time (open included).

Every loaded state dict is compared once with the original tensors.
Targets (issue 14): encrypted load <= 2x plain safetensors (<= 1.5x once the performance issue
has landed); one remote tensor moves its own chunks plus at most the read-ahead, not the file.

Run: ``python benchmarks/bench_checkpoint.py [--gib 1] [--remote-gib 1] [--repeat 5]``;
``--quick`` for a tiny smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file as plain_load_file
from safetensors.torch import save_file as plain_save_file

import shardseal
import shardseal.checkpoint as checkpoint
import shardseal.safetensors as sealed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/http_helpers.py
from tests.http_helpers import serve, stop  # noqa: E402

from _common import core_count, cpu_model, load_average  # noqa: E402
# The same timing and reading as the single-file benchmark, so the two tables compare.
from bench_safetensors import summary, timed, touch  # noqa: E402

TENSOR_ROWS = 1024  # every tensor is 4 MiB: 1024 x 1024 float32
SHARDS = 4


def make_state_dict(total_bytes: int, columns: int = 1024) -> dict:
    generator = torch.Generator().manual_seed(0)
    tensor_bytes = TENSOR_ROWS * columns * 4
    count = max(SHARDS, total_bytes // tensor_bytes)
    return {f"layer{i:04d}.weight": torch.randn(TENSOR_ROWS, columns, generator=generator) for i in range(count)}


def write_plain_checkpoint(tensors: dict, folder: Path, max_bytes: int) -> list[Path]:
    """The 4 plaintext shards and index, as ``save_pretrained`` lays them out."""
    shards: list[dict] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    paths, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        path = folder / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        plain_save_file(shard, path, metadata={"format": "pt"})
        paths.append(path)
        weight_map.update({name: path.name for name in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return paths


def bench_checkpoint(args, key) -> tuple[list, list, int, int]:
    columns = 1024 if not args.quick else 16
    tensors = make_state_dict(int(args.gib * 2**30), columns)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    max_bytes = -(-nbytes // SHARDS)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="shardseal-bench-ckpt-") as folder:
        plain_folder, sealed_folder = Path(folder) / "plain", Path(folder) / "sealed"
        plain_folder.mkdir()
        shards = write_plain_checkpoint(tensors, plain_folder, max_bytes)
        written = checkpoint.save_checkpoint(tensors, sealed_folder, max_shard_size=max_bytes, key=key)
        assert len(shards) == SHARDS and len(written) == SHARDS + 1, (len(shards), written)

        loaded = checkpoint.load_checkpoint(sealed_folder, key=key)  # verification, untimed
        assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
        del loaded

        def plain_load():
            state = {}
            for path in shards:
                state.update(plain_load_file(path))
            touch(state)

        # Alternated, so that a change in the machine's load hits both alike.
        plain, encrypted = [], []
        for _ in range(args.repeat):
            plain += timed(plain_load, 1)
            encrypted += timed(lambda: touch(checkpoint.load_checkpoint(sealed_folder, key=key)), 1)
    return plain, encrypted, len(tensors), nbytes


def bench_remote(args, key) -> dict:
    columns = 1024 if not args.quick else 16
    tensors = make_state_dict(int(args.remote_gib * 2**30), columns)
    name = sorted(tensors)[len(tensors) // 2]
    tensor_bytes = tensors[name].numel() * 4
    sink_path = Path(tempfile.mkdtemp(dir=args.dir, prefix="shardseal-bench-remote-")) / "model.safetensors.sseal"
    try:
        sealed.save_file(tensors, sink_path, key=key)
        blob = sink_path.read_bytes()
    finally:
        sink_path.unlink(missing_ok=True)
        sink_path.parent.rmdir()
    server = serve()
    try:
        server.files["/model.safetensors.sseal"] = blob
        url = "sseal::" + server.url("/model.safetensors.sseal")
        with sealed.safe_open(url, "pt", key=key) as f:  # verification (and a warm aiohttp session)
            assert torch.equal(f.get_tensor(name), tensors[name])
        seconds, moved, requests = [], [], []
        for _ in range(args.repeat * 2):
            server.reset_counts()
            start = time.perf_counter()
            with sealed.safe_open(url, "pt", key=key) as f:
                f.get_tensor(name)
            seconds.append(time.perf_counter() - start)
            moved.append(server.bytes_served)
            requests.append(len(server.gets))
    finally:
        stop(server)
    return {"seconds": seconds, "moved": max(moved), "requests": max(requests), "file": len(blob),
            "tensor": tensor_bytes, "count": len(tensors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB (default 1)")
    parser.add_argument("--remote-gib", type=float, default=1.0, help="remote file size in GiB (default 1)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where to put the files (default /dev/shm)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.gib, args.remote_gib, args.repeat = 0.001, 0.001, 1

    key = shardseal.generate_key()
    plain, encrypted, count, nbytes = bench_checkpoint(args, key)
    remote = bench_remote(args, key)

    print("## Encrypted sharded checkpoint and a remote tensor\n")
    print(f"- CPU: {cpu_model()}, {core_count()} cores; shardseal {shardseal.__version__} "
          f"({shardseal.backend}), torch {torch.__version__}; load average {load_average()}")
    print(f"- checkpoint: {count} float32 tensors = {nbytes / 2**30:.3f} GiB in {SHARDS} shards, files in "
          f"{args.dir}, page cache warm; medians of {args.repeat} runs")
    print(f"- remote: one {remote['tensor'] / 2**20:.2f} MiB tensor of a {remote['file'] / 2**30:.3f} GiB "
          f"encrypted safetensors file ({remote['count']} tensors) over loopback HTTP (range requests)\n")
    print("| measurement | median | min | max | unit |\n|---|---:|---:|---:|---|")
    print(summary("safetensors.torch.load_file of 4 plaintext shards + touch", plain, 1e3, "ms"))
    print(summary("shardseal.checkpoint.load_checkpoint (4 encrypted shards) + touch", encrypted, 1e3, "ms"))
    print(summary("remote safe_open + get_tensor (HTTP, encrypted)", remote["seconds"], 1e3, "ms"))
    ratio = statistics.median(encrypted) / statistics.median(plain)
    print(f"\n- {'PASS' if ratio <= 2 else 'FAIL'}: encrypted checkpoint load / plaintext safetensors load = "
          f"{ratio:.2f}x (target <= 2x; <= 1.5x after the performance issue)")
    moved = remote["moved"]
    print(f"- remote tensor: {moved} bytes moved ({moved / 2**20:.2f} MiB; {moved / remote['file'] * 100:.2f}% "
          f"of the file, {moved / remote['tensor']:.2f}x the tensor) in {remote['requests']} requests")
    bound = remote["tensor"] + 3 * 2**20
    if moved > bound:
        print(f"- FAIL: more than the tensor + 3 MiB ({bound} bytes) moved")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
