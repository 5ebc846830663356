"""Key management services: file keys wrapped by a KMS, and the interface to add your own.

A :class:`KmsRecipient` asks a KMS to encrypt a file's key; a :class:`KmsIdentity` asks it
to decrypt the stanza again. The KMS itself is behind a :class:`KeyProvider`, a two-method
interface: :class:`AwsKms` implements it for AWS KMS, and a few lines implement it for another
service (Vault Transit, Google Cloud KMS, Azure Key Vault, an in-house service)::

    import shardseal
    from shardseal.kms import AwsKms, KmsIdentity, KmsRecipient

    kms = AwsKms(region_name="eu-west-1")
    blob = shardseal.encrypt(data, recipients=[KmsRecipient(kms, "arn:aws:kms:eu-west-1:111122223333:key/...")])
    data = shardseal.decrypt(blob, identities=[KmsIdentity(kms, allowed_accounts=["111122223333"])])

**Encryption context.** Every wrap and unwrap sends the KMS the encryption context
``{"shardseal:header-sha256": <SHA-256 hex of the header's fixed part>}`` (see
:func:`encryption_context`). The fixed part holds the suite and the authenticated metadata, so
the KMS binds the wrapped key to the file it was made for: a stanza copied into another file
(other metadata) is refused by the KMS (:class:`~shardseal.errors.AuthenticationError`), and
CloudTrail logs name the file header each decryption was for. Re-wrapping a file's key for new
recipients (key rotation) rewrites only the key block and keeps the fixed part, so the context,
and every existing KMS stanza, stays valid.

**Who chooses the key.** A ``KmsIdentity(provider)`` with neither ``key_ids`` nor
``allowed_accounts`` sends ``Decrypt`` for whatever key ARNs the file names (at most 8 per
file). A hostile file can name a key in its author's account: the call fails, but that
account's CloudTrail records it, with your principal, time and source address, and so learns
that and when you opened the file (a beacon); a provider other than AWS leaks the same way to
whoever runs the key it is pointed at. Name the keys you expect (``key_ids=``, or
``-i aws-kms:<ARN>`` on the command line) or the accounts you trust (``allowed_accounts=``,
like the AWS Encryption SDK's discovery filter); a file that names any other key is then
declined without a request.

**Stanza.** A KMS stanza (type ``0x0006``) holds the provider's name, the key reference exactly
as it was given to :class:`KmsRecipient`, and the provider's opaque wrapped key; ``inspect`` and
:class:`~shardseal.errors.KeyNotFoundError` name the key as ``"<provider>:<key reference>"``,
e.g. ``"aws-kms:alias/training-data"``. Prefer key ARNs for files that live long: an alias is
resolved again at every decryption, and one that was pointed at another key no longer opens old
files.

**Strings.** ``KmsRecipient.from_string("aws-kms:KEY")`` and ``KmsIdentity.from_string("aws-kms")``
or ``("aws-kms:KEY")`` build an :class:`AwsKms` provider from the usual AWS configuration;
``to_string`` gives those strings back (``shardseal.keys.registry`` parses them for every
function that takes recipient or identity strings). ``KmsKey`` is the old name of
``KmsRecipient`` (deprecated).
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
from typing import Iterable, Iterator, Mapping, NoReturn, Optional, Protocol, TypedDict

from .. import _redact
from . import _deprecated, stanzas as _stanzas
from .envelope import Identity, Recipient, WrapContext
from ..errors import AuthenticationError, KmsError

__all__ = [
    "CONTEXT_KEY",
    "AwsKms",
    "KeyProvider",
    "KmsError",
    "KmsIdentity",
    "KmsRecipient",
    "encryption_context",
    "parse_identity",
    "parse_recipient",
]

CONTEXT_KEY = "shardseal:header-sha256"
AWS_KMS = "aws-kms"
_AWS_ACCOUNT = re.compile(r"[0-9]{12}")

# A provider name is the prefix of "<provider>:<key reference>" strings, so no colon.
_PROVIDER_NAME = _stanzas.KMS_PROVIDER_NAME


def encryption_context(context: WrapContext) -> dict[str, str]:
    """The encryption context a KMS binds a file's wrapped key to.

    Args:
        context: the container's WrapContext (its header's fixed part).

    Returns:
        ``{"shardseal:header-sha256": <hex SHA-256 of the fixed part>}``.

    Raises:
        TypeError: context is not a WrapContext.
    """
    if not isinstance(context, WrapContext):
        raise TypeError(f"context must be a WrapContext, not {type(context).__name__}")
    return {CONTEXT_KEY: context.header_digest}


class _EncryptResponse(TypedDict):
    CiphertextBlob: bytes  # the field of a kms:Encrypt response this module reads


class _DecryptResponse(TypedDict):
    Plaintext: bytes  # the field of a kms:Decrypt response this module reads


class KmsClient(Protocol):
    """What ``AwsKms`` uses of a boto3 KMS client (boto3 has no type information)."""

    def encrypt(self, *, KeyId: str, Plaintext: bytes,
                EncryptionContext: dict[str, str]) -> _EncryptResponse: ...

    def decrypt(self, *, CiphertextBlob: bytes, KeyId: str,
                EncryptionContext: dict[str, str]) -> _DecryptResponse: ...


class KeyProvider(abc.ABC):
    """A key management service that encrypts and decrypts small secrets under named keys.

    Implement ``name``, ``wrap`` and ``unwrap`` to use another KMS with :class:`KmsRecipient` and
    :class:`KmsIdentity`. The provider must authenticate ``context`` (a KMS encryption context,
    or AAD of an AEAD): unwrap with another context must fail. Providers are not picklable,
    since they usually hold credentials or clients.

    Attributes:
        name: the provider's name stored in each stanza: 1 to 64 ASCII letters, digits,
            ``.``, ``_`` or ``-`` (e.g. ``"aws-kms"``, ``"vault-transit"``).

    Raises:
        TypeError: on pickling.
    """

    name: str

    @abc.abstractmethod
    def wrap(self, key_id: str, file_key: bytes, context: Mapping[str, str]) -> bytes:
        """Encrypts file_key under the KMS key key_id, bound to context.

        Args:
            key_id: the KMS key reference (an id, ARN, alias, key name...).
            file_key: the 32-byte file key.
            context: the encryption context to bind (see ``encryption_context``).

        Returns:
            The wrapped key, 1 to 8192 bytes, opaque to shardseal.

        Raises:
            KmsError: the KMS refused or could not be reached.
        """

    @abc.abstractmethod
    def unwrap(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """Decrypts a wrapped key made by ``wrap`` with the same key_id and context.

        Returns:
            The 32-byte file key.

        Raises:
            AuthenticationError: the wrapped key or the context does not authenticate.
            KmsError: any other refusal (access denied, disabled key) or an unreachable KMS.
        """

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} objects hold credentials and are not picklable")


def _check_provider(provider: object) -> KeyProvider:
    if not isinstance(provider, KeyProvider):
        raise TypeError(f"provider must be a KeyProvider, not {type(provider).__name__}")
    name = getattr(provider, "name", None)
    if not isinstance(name, str) or not _PROVIDER_NAME.match(name):
        raise ValueError(f"a KeyProvider name must be 1 to 64 ASCII letters, digits, '.', '_' "
                         f"or '-', got {name!r}")
    return provider


def _check_key_ref(key_id: object) -> str:
    if not isinstance(key_id, str):
        raise TypeError(f"a KMS key id must be a str, not {type(key_id).__name__}")
    encoded = _redact.utf8_bytes(key_id)  # no UnicodeEncodeError holding key_id as __context__
    if encoded is None:
        raise ValueError(f"a KMS key id must be valid text, got {_redact.shown(key_id)}")
    size = len(encoded)
    if not 1 <= size <= _stanzas.MAX_REFERENCE_SIZE or "\x00" in key_id:
        raise ValueError(f"a KMS key id must be 1 to {_stanzas.MAX_REFERENCE_SIZE} UTF-8 bytes "
                         f"without NUL, got {_redact.shown(key_id)}")
    return key_id


class KmsRecipient(Recipient):
    """A recipient whose file key is wrapped by a KMS key.

    Args:
        provider: the KeyProvider that talks to the KMS (e.g. ``AwsKms()``).
        key_id: the KMS key reference; stored in the stanza as given (an ARN is best, see the
            module docs).

    Raises:
        TypeError: provider is not a KeyProvider, or key_id is not a str.
        ValueError: a bad provider name, or an empty or too long key id.
    """

    stanza_type = _stanzas.KMS

    def __init__(self, provider: KeyProvider, key_id: str) -> None:
        self._provider = _check_provider(provider)
        self._key_ref = _check_key_ref(key_id)

    @property
    def provider(self) -> KeyProvider:
        """The KeyProvider that wraps the file key."""
        return self._provider

    @property
    def key_id(self) -> str:
        """``"<provider>:<key reference>"``, as inspect and KeyNotFoundError show it."""
        return f"{self._provider.name}:{self._key_ref}"

    def wrap(self, file_key: bytes, context: WrapContext) -> bytes:
        """Asks the KMS to wrap file_key, bound to the container's header.

        Raises:
            KmsError: the KMS refused or could not be reached.
            ValueError: the provider returned an empty or oversized wrapped key.
        """
        wrapped = self._provider.wrap(self._key_ref, bytes(file_key), encryption_context(context))
        return _stanzas.reference_body(self._provider.name, self._key_ref, bytes(wrapped))

    @classmethod
    def from_string(cls, text: str) -> "KmsRecipient":
        """The recipient ``"aws-kms:<key id, ARN or alias>"`` names (as ``parse_recipient``).

        Raises:
            TypeError: text is not a str.
            ValueError: not an ``aws-kms:`` recipient string, or no AWS region configured.
            ImportError: boto3 is not installed.
        """
        return parse_recipient(text)

    def to_string(self) -> str:
        """The recipient string, ``"<provider>:<key reference>"`` (``aws-kms:...`` for AWS);
        public. Only ``aws-kms:`` (and prefixes registered in ``keys.registry``) parse back."""
        return self.key_id

    def __repr__(self) -> str:
        return f"KmsRecipient(key_id={self.key_id!r})"


class KmsIdentity(Identity):
    """Opens KMS stanzas of one provider by asking the KMS to unwrap them.

    Without key_ids the **file** chooses which keys your credentials are asked to use: a
    hostile file can name a key in its author's AWS account, and your ``Decrypt`` call, which
    that account's CloudTrail logs with your identity, tells the author that (and when, and
    from where) you opened the file. At most 8 such calls per file
    (``Identity.max_unwrap_attempts``). Name the keys you expect (key_ids), or at least the
    accounts you trust (allowed_accounts, like the AWS Encryption SDK's discovery filter).

    Args:
        provider: the KeyProvider that talks to the KMS.
        key_ids: the key references to try (as stored in stanzas, see ``KmsRecipient``); None tries
            every stanza of this provider that allowed_accounts lets through.
        allowed_accounts: AWS account ids (12 digits) whose keys may be tried: a stanza is
            then tried only when its key reference is a KMS ARN
            (``arn:<partition>:kms:<region>:<account>:key/...`` or ``...:alias/...``) of one of
            these accounts; bare key ids and alias names (which resolve in the caller's own
            account) are declined, as are references of other providers' forms. None: no
            account filter.

    Raises:
        TypeError: provider is not a KeyProvider, key_ids or allowed_accounts holds a non-str.
        ValueError: a bad provider name, an empty key_ids or allowed_accounts, a bad key id,
            an account id that is not 12 digits.
    """

    stanza_type = _stanzas.KMS

    def __init__(self, provider: KeyProvider, key_ids: Optional[Iterable[str]] = None, *,
                 allowed_accounts: Optional[Iterable[str]] = None) -> None:
        self._provider = _check_provider(provider)
        if isinstance(key_ids, str):
            key_ids = [key_ids]
        self._key_refs = None if key_ids is None else tuple(_check_key_ref(k) for k in key_ids)
        if self._key_refs == ():
            raise ValueError("key_ids must name at least one key (or be None for any key)")
        if isinstance(allowed_accounts, str):
            allowed_accounts = [allowed_accounts]
        self._accounts = None if allowed_accounts is None else frozenset(_check_account(a) for a in allowed_accounts)
        if self._accounts == frozenset():
            raise ValueError("allowed_accounts must name at least one account (or be None for any)")

    @property
    def provider(self) -> KeyProvider:
        """The KeyProvider that unwraps file keys."""
        return self._provider

    @property
    def key_ids(self) -> tuple[str, ...]:
        """``"<provider>:<key reference>"`` per key, or ``("<provider>:*",)`` for any key."""
        refs = self._key_refs if self._key_refs is not None else ("*",)
        return tuple(f"{self._provider.name}:{ref}" for ref in refs)

    def unwrap(self, body: bytes, context: WrapContext) -> Optional[bytes]:
        """The file key of a stanza addressed to this provider (and key ids), else None.

        Raises:
            FormatError: a malformed KMS stanza body.
            AuthenticationError: the KMS rejects the wrapped key or the context (a tampered
                stanza, or one taken from another file).
            KmsError: any other KMS refusal, or an unreachable KMS.
        """
        stanza = _stanzas.parse_kms(body)
        if stanza.provider != self._provider.name:
            return None
        if self._key_refs is not None and stanza.key_ref not in self._key_refs:
            return None
        if self._accounts is not None and _arn_account(stanza.key_ref) not in self._accounts:
            return None  # declined before any request: not an attempt
        return bytes(self._provider.unwrap(stanza.key_ref, stanza.wrapped_key,
                                           encryption_context(context)))

    @classmethod
    def from_string(cls, text: str) -> "KmsIdentity":
        """The identity ``"aws-kms"`` (any AWS KMS key) or ``"aws-kms:<key id>"`` names (as
        ``parse_identity``).

        Raises:
            TypeError: text is not a str.
            ValueError: not an ``aws-kms`` identity string, or no AWS region configured.
            ImportError: boto3 is not installed.
        """
        return parse_identity(text)

    def to_string(self) -> str:
        """The identity string: ``"<provider>"`` for any key, ``"<provider>:<key>"`` for one
        key (no secret: a KMS key's name).

        Raises:
            ValueError: the identity names several keys or an account filter, which have no
                string form.
        """
        if self._accounts is not None or (self._key_refs is not None and len(self._key_refs) != 1):
            raise ValueError("a KmsIdentity with several key_ids or allowed_accounts has no string form")
        if self._key_refs is None:
            return self._provider.name
        return f"{self._provider.name}:{self._key_refs[0]}"

    def __repr__(self) -> str:
        accounts = "" if self._accounts is None else f", allowed_accounts={sorted(self._accounts)!r}"
        return f"KmsIdentity(key_ids={self.key_ids!r}{accounts})"


def _check_account(account: object) -> str:
    if not isinstance(account, str):
        raise TypeError(f"an AWS account id must be a str, not {type(account).__name__}")
    if not _AWS_ACCOUNT.fullmatch(account):
        raise ValueError(f"an AWS account id is 12 ASCII digits, got {_redact.shown(account)}")
    return account


def _arn_account(key_ref: str) -> Optional[str]:
    """The account of a KMS key or alias ARN, or None for any other reference."""
    parts = key_ref.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "kms" and _AWS_ACCOUNT.fullmatch(parts[4]):
        return parts[4]
    return None


# -- AWS KMS --------------------------------------------------------------------------------

# Error codes of AWS KMS that mean the wrapped key or its encryption context is wrong, as
# opposed to the caller, the key's state or the service (those are KmsError).
_AWS_AUTHENTICATION_CODES = frozenset({"InvalidCiphertextException"})


class AwsKms(KeyProvider):
    """AWS KMS (or a KMS-compatible endpoint) as a KeyProvider, through boto3.

    Wraps with ``Encrypt`` and unwraps with ``Decrypt`` (passing ``KeyId``, so a stanza is only
    ever decrypted by the key it names), both with the file's encryption context. Use symmetric
    encryption keys (``SYMMETRIC_DEFAULT``): asymmetric KMS keys cannot bind an encryption
    context. Callers need ``kms:Encrypt`` to write and ``kms:Decrypt`` to read; IAM conditions
    can test the ``shardseal:header-sha256`` context key.

    Args:
        client: a boto3 KMS client to use; None builds one from the usual AWS configuration
            (environment variables such as ``AWS_DEFAULT_REGION`` (or ``AWS_REGION``),
            ``AWS_PROFILE`` and ``AWS_ENDPOINT_URL_KMS``, shared config files, instance roles).
        region_name: the region of the client built when client is None.
        endpoint_url: the endpoint of the client built when client is None (a VPC endpoint or
            a KMS-compatible service).

    Raises:
        ImportError: boto3 is not installed (``pip install shardseal[kms]``).
        TypeError: client given together with region_name or endpoint_url.
        ValueError: no AWS region is configured.
    """

    name = AWS_KMS

    def __init__(self, client: Optional[KmsClient] = None, *, region_name: Optional[str] = None,
                 endpoint_url: Optional[str] = None) -> None:
        if client is not None and (region_name is not None or endpoint_url is not None):
            raise TypeError("give either client= or region_name=/endpoint_url=, not both")
        self._region_name = region_name
        self._endpoint_url = endpoint_url
        self._owns_client = client is None
        self._client = client if client is not None else self._new_client()
        self._pid = os.getpid()

    def _new_client(self) -> KmsClient:
        try:
            import boto3.session
            from botocore.exceptions import NoRegionError
        except ImportError:
            raise ImportError("AwsKms needs boto3: pip install 'shardseal[kms]'") from None
        # A session of its own: boto3's default session is shared and not thread-safe.
        session = boto3.session.Session(region_name=self._region_name)
        # botocore reads only AWS_DEFAULT_REGION; containers and Lambda often set AWS_REGION.
        region = session.region_name or os.environ.get("AWS_REGION") or None
        try:
            client: KmsClient = session.client("kms", region_name=region, endpoint_url=self._endpoint_url)
            return client
        except NoRegionError:
            raise ValueError("no AWS region is configured: pass region_name= or set "
                             "AWS_DEFAULT_REGION (or AWS_REGION)") from None

    def _kms(self) -> KmsClient:
        # Connections must not be shared with a fork()ed parent (DataLoader workers fork).
        if self._owns_client and os.getpid() != self._pid:
            self._client = self._new_client()
            self._pid = os.getpid()
        return self._client

    def wrap(self, key_id: str, file_key: bytes, context: Mapping[str, str]) -> bytes:
        """``kms:Encrypt`` of file_key under key_id with the encryption context.

        Raises:
            KmsError: the KMS refused (``error.code``: e.g. ``NotFoundException``,
                ``DisabledException``, ``AccessDeniedException``, ``KMSInvalidStateException``)
                or could not be reached (``EndpointConnectionError``).
        """
        with _aws_errors(key_id):
            response = self._kms().encrypt(KeyId=key_id, Plaintext=bytes(file_key),
                                           EncryptionContext=dict(context))
        return response["CiphertextBlob"]

    def unwrap(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """``kms:Decrypt`` of a wrapped key with key_id and the encryption context.

        Raises:
            AuthenticationError: ``InvalidCiphertextException``: the wrapped key was tampered
                with or belongs to another file (another encryption context).
            KmsError: any other refusal or an unreachable KMS (as for ``wrap``).
        """
        with _aws_errors(key_id):
            response = self._kms().decrypt(CiphertextBlob=bytes(wrapped), KeyId=key_id,
                                           EncryptionContext=dict(context))
        return response["Plaintext"]

    def __repr__(self) -> str:
        meta = getattr(self._client, "meta", None)
        region = getattr(meta, "region_name", self._region_name)
        endpoint = getattr(meta, "endpoint_url", self._endpoint_url)
        return f"AwsKms(region_name={region!r}, endpoint_url={endpoint!r})"


@contextlib.contextmanager
def _aws_errors(key_id: str) -> Iterator[None]:
    """Translates the botocore exceptions raised inside the ``with`` block into shardseal's."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code") or "ClientError"
        if code in _AWS_AUTHENTICATION_CODES:
            raise AuthenticationError(f"the KMS did not authenticate the wrapped file key for "
                                      f"{AWS_KMS}:{key_id}") from None
        raise _kms_error(key_id, code, error.get("Message", "")) from exc
    except BotoCoreError as exc:
        # No HTTP answer at all: unreachable endpoint, timeout, no credentials.
        raise _kms_error(key_id, type(exc).__name__, str(exc)) from exc


def _kms_error(key_id: str, code: str, detail: str) -> KmsError:
    message = f"AWS KMS refused the request for {AWS_KMS}:{key_id} ({code})"
    if detail:
        message += f": {detail}"
    return KmsError(message, code=code, key_id=key_id, provider=AWS_KMS)


# -- strings for the command line ------------------------------------------------------------

_PREFIX = AWS_KMS + ":"


def parse_recipient(text: str) -> KmsRecipient:
    """A KmsRecipient from ``"aws-kms:<key id, key ARN, alias name or alias ARN>"``.

    The AwsKms provider is built from the usual AWS configuration.

    Raises:
        TypeError: text is not a str.
        ValueError: not an ``aws-kms:`` recipient string, or no AWS region configured.
        ImportError: boto3 is not installed.
    """
    if not isinstance(text, str):
        raise TypeError(f"a KMS recipient must be a str, not {type(text).__name__}")
    if not text.startswith(_PREFIX) or len(text) == len(_PREFIX):
        raise ValueError(f"not a KMS recipient (expected 'aws-kms:<key id or ARN>'): {text!r}")
    key_ref = _check_key_ref(text[len(_PREFIX):])  # before AwsKms(), whose errors are others
    return KmsRecipient(AwsKms(), key_ref)


def parse_identity(text: str) -> KmsIdentity:
    """A KmsIdentity from ``"aws-kms"`` (any AWS KMS key) or ``"aws-kms:<key id>"``.

    Raises:
        TypeError: text is not a str.
        ValueError: not an ``aws-kms`` identity string, or no AWS region configured.
        ImportError: boto3 is not installed.
    """
    if not isinstance(text, str):
        raise TypeError(f"a KMS identity must be a str, not {type(text).__name__}")
    if text == AWS_KMS:
        return KmsIdentity(AwsKms())
    if not text.startswith(_PREFIX) or len(text) == len(_PREFIX):
        raise ValueError(f"not a KMS identity (expected 'aws-kms' or 'aws-kms:<key id>'): {text!r}")
    key_ref = _check_key_ref(text[len(_PREFIX):])
    return KmsIdentity(AwsKms(), [key_ref])


__getattr__ = _deprecated.module_getattr(__name__, globals(), {"KmsKey": "KmsRecipient"},
                                           short_path="shardseal.kms")
