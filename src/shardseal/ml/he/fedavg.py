"""Federated averaging under encryption: the server sums, only key holders decrypt.

The server (:class:`HEAggregator`) holds a :class:`PublicContext` and the transport key of the
containers, never the secret context: it refuses anything else at construction. Clients seal
their encrypted updates under an identity that names the round and the client
(:func:`update_name`); the server checks every identity before it adds, and seals the
weighted average under :func:`aggregate_name`, which clients check in the next round.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ...errors import AuthenticationError
from .contexts import PublicContext
from .tensors import EncryptedTensor, open_tensor, weighted_sum

__all__ = ["HEAggregator", "aggregate_name", "update_name"]

_PREFIX = "shardseal.he.fedavg"


def update_name(server_round: int, client_id: str) -> str:
    """The identity a client seals its update of ``server_round`` under."""
    return f"{_PREFIX}/round={int(server_round)}/client={client_id}"


def aggregate_name(server_round: int) -> str:
    """The identity of the global model after ``server_round`` (0: the initial model)."""
    return f"{_PREFIX}/round={int(server_round)}/aggregate"


class HEAggregator:
    """The aggregation server: weighted sums of sealed encrypted updates.

    Args:
        public_context: the CKKS public context. A SecretContext (or anything else) is a
            TypeError: the server code path never receives the secret key.
        key: the key (or key reference) of the update containers, shared with the clients; or
        identities: identities that open them (and then ``recipients`` to seal the aggregate).
        recipients: recipients of the aggregate's container (default: the same key).

    Raises:
        TypeError: public_context is not a PublicContext.
    """

    def __init__(self, public_context: PublicContext, *, key: Any = None,
                 identities: Optional[Sequence[Any]] = None, recipients: Optional[Sequence[Any]] = None) -> None:
        if type(public_context) is not PublicContext:
            raise TypeError("the aggregation server takes a PublicContext only, not "
                            f"{type(public_context).__name__}: it must never hold the secret key")
        self._public = public_context
        self._key = key
        self._identities = identities
        self._recipients = recipients

    @property
    def public_context(self) -> PublicContext:
        return self._public

    def open_updates(self, updates: Sequence[bytes], server_round: int) -> list[EncryptedTensor]:
        """Authenticates the updates of one round: right round, one update per client.

        Raises:
            AuthenticationError: a tampered container, one of another round, or a client twice.
        """
        prefix = update_name(server_round, "")
        opened, seen = [], set()
        for container in updates:
            tensor = open_tensor(container, self._public, name=None, key=self._key, identities=self._identities)
            name = tensor.name or ""
            if not name.startswith(prefix) or name in seen:
                raise AuthenticationError("an update of another round, or a client's update twice (replayed)")
            seen.add(name)
            opened.append(tensor)
        return opened

    def aggregate(self, updates: Sequence[tuple[bytes, float]], server_round: int) -> bytes:
        """The weighted average of one round's sealed updates, sealed as the next global model.

        Args:
            updates: (sealed update, weight) pairs; weights are example counts (any positive
                numbers: they are normalised).
            server_round: the round, checked against each update's identity.

        Returns:
            The container of the average, named ``aggregate_name(server_round)``.

        Raises:
            AuthenticationError: see :meth:`open_updates`.
            ValueError: no updates, a negative or non-finite weight, a non-positive total
                weight, incompatible layouts.
        """
        if not updates:
            raise ValueError("no updates to aggregate")
        weights = [float(weight) for _, weight in updates]
        if not all(0 <= weight < float("inf") for weight in weights):
            # A negative weight with a positive total would amplify one update, not average.
            raise ValueError("every weight must be a finite non-negative number (an example count)")
        total = sum(weights)
        if not total > 0:
            raise ValueError("the total weight must be positive")
        tensors = self.open_updates([container for container, _ in updates], server_round)
        average = weighted_sum(tensors, [weight / total for weight in weights])
        key = None if self._recipients is not None else self._key
        return average.seal(name=aggregate_name(server_round), key=key, recipients=self._recipients)

    def __repr__(self) -> str:
        return f"HEAggregator({self._public!r})"
