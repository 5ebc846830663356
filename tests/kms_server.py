"""A KMS-compatible HTTP endpoint on loopback for the tests: moto's server, not AWS.

``KmsServer`` runs moto's ``ThreadedMotoServer`` on 127.0.0.1 at a free port and builds boto3
KMS clients for it with dummy credentials given to each client (never through the process
environment). Nothing here can reach AWS.

moto (5.2.5) does not refuse Encrypt/Decrypt with a disabled key or one pending deletion, as
AWS does; ``enforce_key_states`` adds AWS's documented refusals (``DisabledException``,
``KMSInvalidStateException``) to moto's backend, so that those errors still travel as real
HTTP error responses through botocore.
"""

from __future__ import annotations

import logging
import socket

import boto3.session
from botocore.config import Config
from moto.core.exceptions import JsonRESTError
from moto.kms.models import KmsBackend
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Failures must show at once, not after botocore's retries with backoff.
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=2,
                    read_timeout=10)


class KmsServer:
    """moto's KMS-compatible endpoint on 127.0.0.1; ``start`` it once per test module."""

    def __init__(self) -> None:
        # port 0: the operating system picks a free port.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._werkzeug = logging.getLogger("werkzeug")
        self._werkzeug_level = self._werkzeug.level
        self.endpoint_url = ""

    def start(self) -> KmsServer:
        # werkzeug logs every request on stderr; keep test output readable while it runs.
        self._werkzeug.setLevel(logging.ERROR)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()
        self._werkzeug.setLevel(self._werkzeug_level)

    def client(self, endpoint_url: str | None = None):
        """A boto3 KMS client for this server (or endpoint_url) with dummy credentials."""
        return kms_client(endpoint_url or self.endpoint_url)

    def create_key(self, description: str = "shardseal test key") -> dict:
        """A new symmetric encryption key; returns its KeyMetadata (KeyId, Arn, ...)."""
        return self.client().create_key(Description=description)["KeyMetadata"]


def kms_client(endpoint_url: str):
    """A boto3 KMS client for endpoint_url with dummy credentials and no retries."""
    session = boto3.session.Session(region_name=REGION, **DUMMY_CREDENTIALS)
    return session.client("kms", endpoint_url=endpoint_url, config=NO_RETRIES)


def unused_endpoint_url() -> str:
    """An http://127.0.0.1 endpoint where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _KeyStateError(JsonRESTError):
    code = 400


def _refuse_unusable_key(backend: KmsBackend, key_id: str) -> None:
    # As AWS KMS answers Encrypt/Decrypt for a key that is not enabled.
    key = backend.keys[backend.any_id_to_key_id(key_id)]
    if key.key_state == "Disabled":
        raise _KeyStateError("DisabledException", f"{key.arn} is disabled.")
    if key.key_state != "Enabled":
        raise _KeyStateError("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")


def enforce_key_states(monkeypatch) -> None:
    """Makes moto's Encrypt/Decrypt refuse disabled keys and keys pending deletion, as AWS does
    (for the duration of the calling test)."""
    encrypt, decrypt = KmsBackend.encrypt, KmsBackend.decrypt

    def checked_encrypt(self, key_id, plaintext, encryption_context):
        _refuse_unusable_key(self, key_id)
        return encrypt(self, key_id, plaintext, encryption_context)

    def checked_decrypt(self, ciphertext_blob, encryption_context, key_id=None):
        if key_id is not None:
            _refuse_unusable_key(self, key_id)
        plaintext, arn = decrypt(self, ciphertext_blob, encryption_context, key_id)
        _refuse_unusable_key(self, arn)
        return plaintext, arn

    monkeypatch.setattr(KmsBackend, "encrypt", checked_encrypt)
    monkeypatch.setattr(KmsBackend, "decrypt", checked_decrypt)
