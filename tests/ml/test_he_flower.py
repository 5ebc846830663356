"""HE-FedAvg in a real Flower run: a gRPC server and 3 clients on 127.0.0.1, 2 rounds.

No Ray: Flower's simulation engine needs Ray, which the ``he`` extra does not install, so this
uses Flower's (deprecated but shipped) loopback deployment: ``flwr.server.start_server`` (in a
thread of this process, so that the test can inspect the strategy) and ``flwr.client.start_client``
(one process per client: it installs signal handlers) over gRPC.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal", reason="the he extra")
flwr = pytest.importorskip("flwr", reason="the he extra (Flower)")

import shardseal  # noqa: E402
import shardseal.he as he  # noqa: E402
from .he_flower_client import make_train  # noqa: E402
from ..cli_helpers import PACKAGE_ROOT  # noqa: E402

CLIENTS = 3
ROUNDS = 2
# CKKS at the default parameters: each round re-encrypts (fresh noise) and one weighted sum
# (one plaintext multiplication); the error stays far below this.
BOUND = 1e-5
ROOT = Path(__file__).resolve().parents[2]


def _plaintext_fedavg(initial):
    weights = initial
    for _ in range(ROUNDS):
        updates = [make_train(i)(weights, {}) for i in range(CLIENTS)]
        total = sum(n for _, n in updates)
        weights = [sum(u[k].astype(np.float64) * n for u, n in updates) / total for k in range(2)]
    return weights


class _BoundedClientManager(flwr.server.SimpleClientManager):
    def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
        return super().wait_for(num_clients, timeout=min(timeout, 120))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_he_fedavg_over_flower_grpc_loopback_equals_plaintext_fedavg(tmp_path):
    key = shardseal.generate_key()
    secret = he.SecretContext.generate()
    # What the server gets: the public context, loaded as any party would, pinned by fingerprint.
    public = he.PublicContext.from_bytes(secret.public_context().to_bytes(), fingerprint=secret.fingerprint)
    initial = [np.zeros(4, np.float32), np.zeros(1, np.float32)]
    sealed_initial = he.encrypt_tensors(initial, public).seal(name=he.aggregate_name(0), key=key)
    strategy = he.HEFedAvg(public, initial_parameters=sealed_initial, key=key, min_fit_clients=CLIENTS)
    address = f"127.0.0.1:{_free_port()}"
    (tmp_path / "secret.sseal").write_bytes(secret.seal(key=key))  # the secret key's only form at rest
    (tmp_path / "key").write_bytes(key)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, str(ROOT)]))
    clients = [subprocess.Popen([sys.executable, "-m", "tests.ml.he_flower_client", address, str(i),
                                 str(tmp_path / "secret.sseal"), str(tmp_path / "key")],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for i in range(CLIENTS)]
    try:
        # start_server registers signal handlers: it runs on this (the main) thread; the bounded
        # client manager and round timeout end it if a client never comes.
        flwr.server.start_server(server_address=address, strategy=strategy, client_manager=_BoundedClientManager(),
                                 config=flwr.server.ServerConfig(num_rounds=ROUNDS, round_timeout=120))
        for client in clients:
            output = client.communicate(timeout=60)[0].decode(errors="replace")
            assert client.returncode == 0, output[-3000:]
    finally:
        for client in clients:
            client.kill()
    assert strategy.rounds_aggregated == ROUNDS

    # The key holder decrypts the final global model: equal to plaintext FedAvg within the bound.
    final = he.open_tensor(strategy.latest_parameters, secret, name=he.aggregate_name(ROUNDS), key=key)
    got = he.decrypt_tensors(final, secret)
    want = _plaintext_fedavg(initial)
    for g, w in zip(got, want):
        assert np.abs(g.astype(np.float64) - w).max() <= BOUND
    assert np.abs(want[0] - 0).max() > 0.1  # training moved the model: the comparison is not vacuous

    # The server side never held the secret key: nothing reachable from the strategy is one.
    _assert_no_secret(strategy)


def _assert_no_secret(root) -> None:
    seen, stack = set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        assert not isinstance(obj, he.SecretContext)
        if isinstance(obj, he.PublicContext):
            assert not obj.tenseal_context.is_private()
            continue
        if isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                stack.append(getattr(obj, slot))
        stack.extend(getattr(obj, "__dict__", {}).values())


def test_strategy_refuses_a_secret_context():
    secret = he.SecretContext.generate()
    with pytest.raises(TypeError, match="PublicContext only"):
        he.HEFedAvg(secret, initial_parameters=b"", key=shardseal.generate_key())
