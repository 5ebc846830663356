"""CKKS contexts: the secret context (sealed for recipients) and the public context (pinned by a fingerprint).

The key holder generates a :class:`SecretContext`. Its secret key leaves the process only
inside a shardseal container, sealed for the same recipients as any other shardseal data
(keyring keys, X25519, PKCS#11, KMS, passphrase). Everyone else gets the
:class:`PublicContext`: the CKKS public key and the evaluation (relinearisation) keys, shared in
the clear. It is authenticated by a public commitment, its SHA-256 fingerprint, which the key
holder publishes over an authentic channel (like an SSH host key fingerprint): a client that
encrypted under a substituted public key would hand its update to whoever substituted it, so
:meth:`PublicContext.from_bytes` takes the expected fingerprint and refuses any other context.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ...container import blob as _blob
from ...errors import AuthenticationError, FormatError
from ._tenseal import tenseal as ts

__all__ = [
    "SECRET_CONTEXT_CONTENT_TYPE",
    "CkksParameters",
    "PublicContext",
    "SecretContext",
    "fingerprint_of",
]

SECRET_CONTEXT_CONTENT_TYPE = "shardseal.he.ckks-secret-context"
METADATA_KEY = "shardseal.he"  # the key of the HE metadata in a container's (authenticated) metadata
_FINGERPRINT_PREFIX = "sha256:"
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class CkksParameters:
    """CKKS parameters (docs/he.md explains the choice).

    Attributes:
        poly_modulus_degree: N, a power of two; a ciphertext holds N/2 values.
        coeff_mod_bit_sizes: bit sizes of the coefficient moduli: first and last (special
            prime) as large as the precision needs, one middle modulus per multiplication level.
        scale_bits: log2 of the encoding scale (the fixed-point precision of a value).
        threads: TenSEAL worker threads for this context (None: TenSEAL's default).
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40
    threads: Optional[int] = None

    def as_metadata(self) -> dict[str, Any]:
        return {"poly_modulus_degree": self.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes), "scale_bits": self.scale_bits}


def fingerprint_of(public_context_bytes: bytes) -> str:
    """The public commitment to a serialised public context: ``"sha256:" + hex``."""
    return _FINGERPRINT_PREFIX + hashlib.sha256(public_context_bytes).hexdigest()


class PublicContext:
    """A CKKS public and evaluation context: encrypts and evaluates, cannot decrypt.

    Create one with :meth:`SecretContext.public_context` (key holder) or
    :meth:`PublicContext.from_bytes` (everyone else, with the pinned fingerprint).
    """

    __slots__ = ("_context", "_serialized", "_fingerprint")

    def __init__(self, context: Any, serialized: bytes) -> None:
        # Internal: the TenSEAL context and the exact bytes that the fingerprint commits to.
        if context.is_private():
            raise ValueError("a PublicContext must not hold a secret key")
        self._context = context
        self._serialized = serialized
        self._fingerprint = fingerprint_of(serialized)

    @classmethod
    def from_bytes(cls, data: bytes, *, fingerprint: str) -> "PublicContext":
        """Loads a public context shared in the clear, checked against its pinned fingerprint.

        Args:
            data: the bytes of :meth:`to_bytes`.
            fingerprint: the key holder's published fingerprint (:attr:`fingerprint`), obtained
                over an authentic channel.

        Raises:
            AuthenticationError: the bytes are not the context with that fingerprint.
            FormatError: the bytes are not a TenSEAL context.
            ValueError: the context holds a secret key (it would leak to whoever receives it).
            TypeError: data is not bytes-like or fingerprint is not a string.
        """
        if not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a str, not {type(fingerprint).__name__}")
        serialized = bytes(data)
        if not hmac.compare_digest(fingerprint_of(serialized), fingerprint):
            raise AuthenticationError("the public context does not match the pinned fingerprint")
        try:
            context = ts.context_from(serialized)
        except Exception as exc:  # TenSEAL raises ValueError/RuntimeError on bad bytes
            raise FormatError("not a serialised TenSEAL context") from exc
        if context.is_private():
            raise ValueError("these context bytes hold a secret key: share the public context only "
                             "(SecretContext.public_context().to_bytes())")
        return cls(context, serialized)

    def to_bytes(self) -> bytes:
        """The serialised public context (public key and evaluation keys; no secret key)."""
        return self._serialized

    @property
    def fingerprint(self) -> str:
        """The public commitment to this context (``"sha256:" + hex``): publish and pin it."""
        return self._fingerprint

    @property
    def slots(self) -> int:
        """Values per ciphertext (N/2)."""
        return _slots_of(self._context)

    @property
    def tenseal_context(self) -> Any:
        """The underlying TenSEAL context (public: it holds no secret key)."""
        return self._context

    def __repr__(self) -> str:
        return f"PublicContext({self._fingerprint[:23]}..., {len(self._serialized)} bytes)"


def _slots_of(context: Any) -> int:
    # N/2: TenSEAL exposes N only through the SEAL parameters.
    return int(context.seal_context().data.key_context_data().parms().poly_modulus_degree() // 2)


class SecretContext:
    """A CKKS context with its secret key: the key holder's, never the server's.

    It does not pickle and its repr shows no key. Store it with :meth:`seal`, load it with
    :meth:`open`. It is not a :class:`PublicContext`, so code that accepts only a
    PublicContext (the aggregation server) refuses it.
    """

    __slots__ = ("_context", "_public", "_parameters")

    def __init__(self, context: Any, public: PublicContext, parameters: CkksParameters) -> None:
        # Internal: use generate() or open().
        if not context.is_private():
            raise ValueError("a SecretContext needs a context that holds the secret key")
        self._context = context
        self._public = public
        self._parameters = parameters

    @classmethod
    def generate(cls, parameters: Optional[CkksParameters] = None) -> "SecretContext":
        """Generates a fresh CKKS key pair and evaluation keys.

        Args:
            parameters: N, moduli and scale; the defaults (N=8192, [60,40,40,60], 2^40) allow
                two plaintext multiplications with about 1e-7 relative precision.

        Raises:
            ValueError: parameters SEAL rejects (for example moduli too large for N).
        """
        parameters = parameters or CkksParameters()
        if not isinstance(parameters, CkksParameters):
            raise TypeError(f"parameters must be CkksParameters, not {type(parameters).__name__}")
        kwargs = {} if parameters.threads is None else {"n_threads": parameters.threads}
        context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=parameters.poly_modulus_degree,
                             coeff_mod_bit_sizes=list(parameters.coeff_mod_bit_sizes), **kwargs)
        context.global_scale = 2.0 ** parameters.scale_bits
        public = context.copy()
        public.make_context_public()
        return cls(context, PublicContext(public, public.serialize()), parameters)

    def public_context(self) -> PublicContext:
        """The public context to share (in the clear) with clients and the server."""
        return self._public

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the matching public context."""
        return self._public.fingerprint

    @property
    def parameters(self) -> CkksParameters:
        return self._parameters

    def seal(self, *, recipients: Optional[Sequence[Any]] = None, key: Any = None) -> bytes:
        """Seals the secret context in a shardseal container (``shardseal.encrypt``).

        Args:
            recipients: who may open it: any recipients ``shardseal.encrypt`` takes.
            key: or a 32-byte key / key reference of a direct-key container.

        Returns:
            The container; its metadata (authenticated, not secret) names the content type,
            the parameters and the public fingerprint.

        Raises:
            ValueError, TypeError: as ``shardseal.encrypt`` for the key or recipients.
        """
        secret = self._context.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=True,
                                         save_relin_keys=True)
        public = self._public.to_bytes()
        payload = b"".join((_LENGTH.pack(len(public)), public, secret))
        metadata = {METADATA_KEY: {"content_type": SECRET_CONTEXT_CONTENT_TYPE, "fingerprint": self.fingerprint,
                                   "parameters": self._parameters.as_metadata()}}
        return _blob.encrypt(payload, key, recipients=recipients, metadata=metadata)

    @classmethod
    def open(cls, container: bytes, *, identities: Optional[Sequence[Any]] = None,
             key: Any = None) -> "SecretContext":
        """Opens a sealed secret context (``shardseal.decrypt``).

        Raises:
            AuthenticationError: tampered, or not for these identities / this key.
            FormatError: the container holds something else than a secret context.
        """
        data = bytes(container)
        payload = _blob.decrypt(data, key, identities=identities)  # authenticates the metadata too
        info = _blob.inspect(data)
        meta = info.metadata.get(METADATA_KEY)
        if not isinstance(meta, dict) or meta.get("content_type") != SECRET_CONTEXT_CONTENT_TYPE:
            raise FormatError("the container does not hold a shardseal HE secret context")
        if len(payload) < _LENGTH.size:
            raise FormatError("truncated HE secret context payload")
        (public_size,) = _LENGTH.unpack_from(payload)
        public = payload[_LENGTH.size:_LENGTH.size + public_size]
        if len(public) != public_size or fingerprint_of(public) != meta.get("fingerprint"):
            raise FormatError("the sealed public context does not match its fingerprint")
        try:
            context = ts.context_from(payload[_LENGTH.size + public_size:])
            public_context = ts.context_from(public)
        except Exception as exc:
            raise FormatError("not a serialised TenSEAL context") from exc
        try:
            params = meta["parameters"]
            parameters = CkksParameters(int(params["poly_modulus_degree"]),
                                        tuple(int(b) for b in params["coeff_mod_bit_sizes"]), int(params["scale_bits"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError("malformed HE secret context parameters") from exc
        return cls(context, PublicContext(public_context, public), parameters)

    def decrypt_vectors(self, vectors: Sequence[Any]) -> list[list[float]]:
        # Internal (tensors.decrypt_tensors): TenSEAL decrypts with the secret key given
        # explicitly. secret_key() returns a copy of the key (hundreds of KB): once per call.
        secret_key = self._context.secret_key()
        return [vector.decrypt(secret_key) for vector in vectors]

    def __repr__(self) -> str:
        return f"SecretContext({self.fingerprint[:23]}..., secret key hidden)"

    def __reduce__(self) -> Any:
        raise TypeError("SecretContext does not pickle: store it with seal(recipients=...)")
