"""Recipient strings: the one place the library turns a recipient's string form into an object.

Each prefix names the key-type module that parses it. The modules are imported on first use,
so that ``import shardseal`` does not load every key type (DataLoader workers import it in
every process). ``keys.specs`` builds the command-line forms on top of this.
"""

from __future__ import annotations

from typing import Iterable, Union

from . import stanzas as _stanzas
from .envelope import Recipient

# The recipients argument of the encrypting functions: Recipient objects or recipient strings
# (see parse_recipient), one or several.
Recipients = Union[Recipient, str, Iterable[Union[Recipient, str]]]


def check_recipients(recipients: Recipients) -> tuple[Recipient, ...]:
    """Validates a recipients argument: a non-empty sequence of Recipient objects (or
    recipient strings, see ``parse_recipient``).

    Raises:
        TypeError: not a sequence of recipients.
        ValueError: empty, too many, or a passphrase beside other recipients.
    """
    if isinstance(recipients, (str, bytes, Recipient)):
        recipients = [recipients]
    try:
        items = tuple(recipients)
    except TypeError:
        raise TypeError(f"recipients must be a list of recipients, not {type(recipients).__name__}") from None
    result = tuple(parse_recipient(r) if isinstance(r, str) else r for r in items)
    for recipient in result:
        if not isinstance(recipient, Recipient):
            raise TypeError(f"recipients must be Recipient objects or recipient strings, "
                            f"not {type(recipient).__name__}")
    if not 1 <= len(result) <= _stanzas.MAX_STANZAS:
        raise ValueError(f"give 1 to {_stanzas.MAX_STANZAS} recipients, got {len(result)}")
    if len(result) > 1 and any(r.stanza_type == _stanzas.PASSPHRASE for r in result):
        raise ValueError("a passphrase must be the only recipient of a file")
    return result


def parse_recipient(text: str) -> Recipient:
    """A recipient from its string form: an X25519 recipient (``ssealx1...``), an AWS KMS
    key (``aws-kms:<key id, ARN or alias>``) or a PKCS#11 key (``pkcs11:token=...;object=...``,
    module and PIN from the environment, see ``shardseal.pkcs11``).

    Raises:
        ValueError: not a recipient string this library knows.
    """
    if text.startswith("aws-kms:"):
        from . import kms
        return kms.parse_recipient(text)
    if text.startswith("pkcs11:"):
        from . import pkcs11
        return pkcs11.Pkcs11Key.from_uri(text)
    from . import x25519

    return x25519.X25519Recipient.from_string(text)
