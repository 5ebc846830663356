"""Save a PyTorch model's weights encrypted, and load them back in one call.

    pip install "shardseal[torch]"
    python examples/load_encrypted_model.py

The weights file is an encrypted safetensors file: `shardseal decrypt -k KEYFILE` turns it into
an ordinary `.safetensors` file, but loading it here never writes any plaintext to disk.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import shardseal
import shardseal.safetensors


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 256), nn.GELU(),
        nn.Linear(256, 256), nn.GELU(),
        nn.Linear(256, 10),
    )


def main() -> int:
    torch.manual_seed(0)
    model = make_model().eval()
    key = shardseal.generate_key()  # in real use: shardseal.keyfile.read_key_file("team.key")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors.sseal"

        # Save: the state dict's tensors stream straight into the encrypted file (atomic write).
        shardseal.safetensors.save_file(model.state_dict(), path, key=key, metadata={"arch": "mlp-64-256-10"})

        # Load: one call decrypts and authenticates every byte, and gives a state dict.
        restored = make_model().eval()
        restored.load_state_dict(shardseal.safetensors.load_file(path, key=key))

        # Or read single tensors: only the chunks holding them are decrypted.
        with shardseal.safetensors.safe_open(path, "pt", key=key) as f:
            print("tensors:", f.keys())
            print("metadata:", f.metadata())
            bias = f.get_tensor("4.bias")
            first_rows = f.get_slice("0.weight")[:2]
            print("0.weight", f.get_slice("0.weight").get_shape(), f.get_slice("0.weight").get_dtype())

        print(f"file: {path.stat().st_size} bytes, {shardseal.inspect(path.read_bytes()).suite}")

    x = torch.randn(8, 64)
    with torch.no_grad():
        same = torch.equal(model(x), restored(x))
    same = same and torch.equal(bias, model[4].bias) and torch.equal(first_rows, model[0].weight[:2])
    print("outputs equal:", same)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
