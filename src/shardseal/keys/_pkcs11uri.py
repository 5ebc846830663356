"""RFC 7512 PKCS#11 URIs naming a key-encryption key: ``pkcs11:token=...;object=...``.

Used by ``pkcs11`` (to name keys) and by ``stanzas`` (to check the URI of every PKCS#11 stanza
when a header is parsed, without importing python-pkcs11 or touching a token).
"""

from __future__ import annotations

import re
import urllib.parse

MODULE_ENV = "SHARDSEAL_PKCS11_MODULE"
PIN_ENV = "SHARDSEAL_PKCS11_PIN"
URI_SCHEME = "pkcs11:"
MAX_TOKEN_LABEL_SIZE = 32  # CK_TOKEN_INFO.label is 32 bytes, blank padded
MAX_URI_SIZE = 1024  # the key reference limit of a key stanza (docs/FORMAT.md 2.10)

# -- RFC 7512 URIs ------------------------------------------------------------------------------

# RFC 7512 pk11-pchar without pct-encoded: unreserved / pk11-res-avail / "&". quote() always
# keeps ALPHA, DIGIT and "-._~" (unreserved), so only the rest needs naming.
_PATH_SAFE = ":[]@!$'()*+,=&"
_PATH_VALUE = re.compile(r"(?:[A-Za-z0-9\-._~:\[\]@!$'()*+,=&]|%[0-9A-Fa-f]{2})*")
_SUPPORTED_ATTRIBUTES = ("token", "object", "type")


def make_uri(token_label: str, key_label: str) -> str:
    """The RFC 7512 URI ``pkcs11:token=...;object=...`` of a key, percent-encoded.

    Raises:
        TypeError: a label is not a str.
        ValueError: a label is empty or too long (see ``Pkcs11Recipient``).
    """
    token_label, key_label = _check_token_label(token_label), _check_key_label(key_label)
    uri = (f"{URI_SCHEME}token={urllib.parse.quote(token_label, safe=_PATH_SAFE)}"
           f";object={urllib.parse.quote(key_label, safe=_PATH_SAFE)}")
    if len(uri.encode("ascii")) > MAX_URI_SIZE:
        raise ValueError(f"the key's PKCS#11 URI would be {len(uri)} bytes, over the "
                         f"{MAX_URI_SIZE}-byte limit of a key stanza")
    return uri


def parse_uri(uri: str) -> tuple[str, str]:
    """The (token label, key label) an RFC 7512 URI names.

    The URI must name a ``token`` and an ``object``; it may say ``type=secret-key``. Other
    attributes (``id``, ``serial``, ...) and query attributes (``pin-value``, ``module-path``)
    are refused rather than ignored, so that a URI never selects a key other than the one it
    seems to: give the module and PIN as arguments instead.

    Raises:
        TypeError: uri is not a str.
        ValueError: uri is not such a PKCS#11 URI. The message quotes attribute names only.
    """
    if not isinstance(uri, str):
        raise TypeError(f"a PKCS#11 URI must be a str, not {type(uri).__name__}")
    if not uri.startswith(URI_SCHEME):
        raise ValueError(f"a PKCS#11 URI starts with {URI_SCHEME!r}")
    path, has_query, _ = uri[len(URI_SCHEME):].partition("?")
    if has_query:
        raise ValueError("PKCS#11 URI query attributes (pin-value, module-path, ...) are not "
                         "supported: pass module= and pin= (or set "
                         f"{MODULE_ENV} and {PIN_ENV})")
    attributes = _path_attributes(path)
    if attributes.get("type", "secret-key") != "secret-key":
        raise ValueError("a key-encryption key's PKCS#11 URI must have type=secret-key, if any")
    missing = [name for name in ("token", "object") if name not in attributes]
    if missing:
        raise ValueError(f"the PKCS#11 URI names no {' and no '.join(missing)} "
                         "(expected pkcs11:token=...;object=...)")
    return _check_token_label(attributes["token"]), _check_key_label(attributes["object"])


def _path_attributes(path: str) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for part in path.split(";") if path else ():
        name, equals, value = part.partition("=")
        if not equals:
            raise ValueError("each PKCS#11 URI path attribute is name=value, separated by ';'")
        if name not in _SUPPORTED_ATTRIBUTES:
            raise ValueError(f"unsupported PKCS#11 URI attribute {name[:32]!r} (supported: "
                             f"{', '.join(_SUPPORTED_ATTRIBUTES)})")
        if name in attributes:
            raise ValueError(f"the PKCS#11 URI attribute {name!r} appears twice")
        attributes[name] = _percent_decode(name, value)
    return attributes


def _percent_decode(name: str, value: str) -> str:
    if not _PATH_VALUE.fullmatch(value):
        raise ValueError(f"the PKCS#11 URI attribute {name!r} has a character that must be "
                         "percent-encoded (RFC 7512), or a bad %XX escape")
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"the PKCS#11 URI attribute {name!r} is not UTF-8 once decoded") from None


def _check_token_label(label: object) -> str:
    if not isinstance(label, str):
        raise TypeError(f"a token label must be a str, not {type(label).__name__}")
    size = len(label.encode("utf-8"))
    if not 1 <= size <= MAX_TOKEN_LABEL_SIZE or label != label.rstrip(" ") or "\0" in label:
        # Labels are blank padded in CK_TOKEN_INFO, so trailing blanks could never match.
        raise ValueError(f"a token label must be 1..{MAX_TOKEN_LABEL_SIZE} UTF-8 bytes without "
                         "trailing blanks or NUL")
    return label


def _check_key_label(label: object) -> str:
    if not isinstance(label, str):
        raise TypeError(f"a key label must be a str, not {type(label).__name__}")
    if not label or "\0" in label:
        raise ValueError("a key label must be a non-empty str without NUL")
    return label
