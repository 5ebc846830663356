"""HE-FedAvg for Flower (the ``he`` extra with flwr): a Strategy that averages encrypted updates.

The strategy runs on the server and holds only the public context and the containers' key
(:class:`~shardseal.ml.he.fedavg.HEAggregator`). Each Flower ``Parameters`` object carries one
sealed encrypted model (``tensor_type`` :data:`PARAMETERS_TYPE`). Clients
(:class:`HEFedAvgClient`) hold the secret context: they decrypt the global model, train, and
send back their encrypted, sealed update.

This module imports flwr when it is imported; ``import shardseal.he`` does not.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

try:
    from flwr.client import Client
    from flwr.common import (
        Code, EvaluateIns, EvaluateRes, FitIns, FitRes, GetParametersIns, GetParametersRes, Parameters, Status,
    )
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import Strategy
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("shardseal.he's Flower integration needs flwr: pip install 'shardseal[he]'") from exc

from .contexts import PublicContext, SecretContext
from .fedavg import HEAggregator, aggregate_name, update_name
from .tensors import decrypt_tensors, encrypt_tensors, open_tensor

__all__ = ["PARAMETERS_TYPE", "HEFedAvg", "HEFedAvgClient"]

PARAMETERS_TYPE = "shardseal.he.ckks-tensors"
# A client's training step: (global weights, fit config) -> (new weights, number of examples).
TrainFn = Callable[[Union[list[Any], dict[str, Any]], dict[str, Any]], tuple[Any, int]]


def _sealed(parameters: Parameters) -> bytes:
    if parameters.tensor_type != PARAMETERS_TYPE or len(parameters.tensors) != 1:
        raise ValueError(f"expected one {PARAMETERS_TYPE} tensor, got {len(parameters.tensors)} "
                         f"of type {parameters.tensor_type!r}")
    return parameters.tensors[0]


class HEFedAvg(Strategy):
    """Federated averaging of CKKS-encrypted updates: the server never sees a model in the clear.

    Args:
        public_context: the CKKS public context (a SecretContext is a TypeError).
        initial_parameters: the initial global model, sealed under
            ``aggregate_name(0)`` (``encrypt_tensors(model, public).seal(...)``).
        key: the key (or key reference) of the model containers, shared with the clients.
        min_fit_clients: clients sampled per round (every available one, at least this many).
        accept_failures: aggregate a round in which some clients failed.

    Raises:
        TypeError: public_context is not a PublicContext.
    """

    def __init__(self, public_context: PublicContext, *, initial_parameters: bytes, key: Any,
                 min_fit_clients: int = 2, accept_failures: bool = False) -> None:
        super().__init__()
        self._aggregator = HEAggregator(public_context, key=key)
        self._initial = bytes(initial_parameters)
        self._min_fit_clients = int(min_fit_clients)
        self._accept_failures = accept_failures
        self.latest_parameters: Optional[bytes] = None  # the last sealed global model
        self.rounds_aggregated = 0

    def __repr__(self) -> str:
        return f"HEFedAvg({self._aggregator.public_context!r}, min_fit_clients={self._min_fit_clients})"

    def initialize_parameters(self, client_manager: ClientManager) -> Optional[Parameters]:
        return Parameters(tensors=[self._initial], tensor_type=PARAMETERS_TYPE)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        count = max(self._min_fit_clients, client_manager.num_available())
        clients = client_manager.sample(num_clients=count, min_num_clients=self._min_fit_clients)
        fit_ins = FitIns(parameters, {"server_round": server_round})
        return [(client, fit_ins) for client in clients]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[Any]) -> tuple[Optional[Parameters], dict[str, Any]]:
        if not results or (failures and not self._accept_failures):
            return None, {}
        updates = [(_sealed(res.parameters), res.num_examples) for _, res in results]
        sealed = self._aggregator.aggregate(updates, server_round)
        self.latest_parameters = sealed
        self.rounds_aggregated += 1
        return Parameters(tensors=[sealed], tensor_type=PARAMETERS_TYPE), {"clients": len(results)}

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []  # the server cannot evaluate an encrypted model; clients evaluate locally

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list[Any]) -> tuple[Optional[float], dict[str, Any]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> Optional[tuple[float, dict[str, Any]]]:
        return None


class HEFedAvgClient(Client):
    """A Flower client of :class:`HEFedAvg`: decrypts the global model, trains, encrypts its update.

    Args:
        client_id: this client's identity in its updates' names (unique per federation).
        secret_context: the CKKS secret context (opened from its sealed container).
        key: the key (or key reference) of the model containers, shared with the server.
        train: ``train(weights, config) -> (new_weights, num_examples)``; weights as
            ``decrypt_tensors`` returns them (a list or a dict of arrays/tensors).
    """

    def __init__(self, client_id: str, secret_context: SecretContext, *, key: Any, train: TrainFn) -> None:
        if not isinstance(secret_context, SecretContext):
            raise TypeError(f"secret_context must be a SecretContext, not {type(secret_context).__name__}")
        self._client_id = str(client_id)
        self._secret = secret_context
        self._key = key
        self._train = train

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        return GetParametersRes(status=Status(Code.OK, ""), parameters=Parameters([], PARAMETERS_TYPE))

    def fit(self, ins: FitIns) -> FitRes:
        server_round = int(ins.config["server_round"])
        global_model = open_tensor(_sealed(ins.parameters), self._secret, name=aggregate_name(server_round - 1),
                                   key=self._key)
        weights, num_examples = self._train(decrypt_tensors(global_model, self._secret), dict(ins.config))
        update = encrypt_tensors(weights, self._secret.public_context())
        sealed = update.seal(name=update_name(server_round, self._client_id), key=self._key)
        return FitRes(status=Status(Code.OK, ""), parameters=Parameters([sealed], PARAMETERS_TYPE),
                      num_examples=int(num_examples), metrics={})

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes(status=Status(Code.OK, ""), loss=0.0, num_examples=0, metrics={})

    def __repr__(self) -> str:
        return f"HEFedAvgClient({self._client_id!r}, {self._secret!r})"
