"""A test-local key-encryption key: AES key wrap (RFC 3394) in well-formed keyring stanzas.

It stands in for ``shardseal.keyring`` where a test must not depend on the recipient modules:
a 32-byte KEK with a 16-byte id, the stanza body being ``kek_id || AES-KW(KEK, file_key)``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from shardseal.keys import envelope as _envelope, stanzas as _stanzas
from shardseal.errors import AuthenticationError


class KekRecipient(_envelope.Recipient):
    """Wraps the file key with AES key wrap under a KEK, in a keyring stanza."""

    stanza_type = _stanzas.KEYRING

    def __init__(self, kek: bytes, kek_id: bytes) -> None:
        self._kek, self._id = kek, kek_id

    @property
    def key_id(self) -> str:
        return self._id.hex()

    def wrap(self, file_key, context: _envelope.WrapContext) -> bytes:
        return _stanzas.keyring_body(self._id, aes_key_wrap(self._kek, bytes(file_key)))

    def stanza_size(self) -> int:
        return _stanzas.KEY_ID_SIZE + _stanzas.AES_KW_SIZE


class KekIdentity(_envelope.Identity):
    """Unwraps the keyring stanzas addressed to its KEK's id."""

    stanza_type = _stanzas.KEYRING

    def __init__(self, kek: bytes, kek_id: bytes) -> None:
        self._kek, self._id = kek, kek_id

    @property
    def key_ids(self) -> tuple:
        return (self._id.hex(),)

    def unwrap(self, body: bytes, context: _envelope.WrapContext):
        kek_id, wrapped = _stanzas.parse_keyring(body)
        if kek_id != self._id:
            return None  # another KEK's stanza: not an error, the next identity may open it
        try:
            return aes_key_unwrap(self._kek, wrapped)
        except InvalidUnwrap:
            raise AuthenticationError("the keyring stanza does not unwrap under this KEK") from None
