"""A Flower HE-FedAvg client process for tests/ml/test_he_flower.py (and its training step).

    python -m tests.ml.he_flower_client ADDRESS INDEX SEALED_SECRET_CONTEXT KEY_FILE

Flower's start_client installs signal handlers, so each client is a process of its own. The
client opens the sealed secret context with the key holder's key: the secret key reaches the
clients only inside a shardseal container.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

LEARNING_RATE = 0.1


def client_data(index: int) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(index)
    count = 20 + 10 * index  # unequal example counts: the weights matter
    x = rng.normal(size=(count, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=count)
    return x, y, count


def make_train(index: int):
    x, y, count = client_data(index)

    def train(weights, config):
        w, b = np.asarray(weights[0], np.float64), np.asarray(weights[1], np.float64)
        for _ in range(3):  # a few steps of gradient descent on the squared error
            error = x @ w + b - y
            w = w - LEARNING_RATE * (x.T @ error) / count
            b = b - LEARNING_RATE * error.mean(keepdims=True)
        return [w.astype(np.float32), b.astype(np.float32)], count

    return train


def main(address: str, index: int, sealed_secret: Path, key_file: Path) -> None:
    import flwr

    import shardseal.he as he

    key = key_file.read_bytes()
    secret = he.SecretContext.open(sealed_secret.read_bytes(), key=key)
    client = he.HEFedAvgClient(f"client-{index}", secret, key=key, train=make_train(index))
    flwr.client.start_client(server_address=address, client=client, insecure=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
