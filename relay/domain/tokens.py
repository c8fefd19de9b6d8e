"""Signed tracking tokens (pure): the fields a tracking hit needs, carried in its URL.

A token is `base64url(payload) + "." + base64url(mac)`, where payload is a compact JSON
array `[kind, email, url, listid, sendid, click_tracking_id, mail_class]` (trailing empty
fields dropped) and mac is the first 16 bytes of HMAC-SHA256 over `kind` and the payload.
Binding the kind means an open token cannot be replayed as a click. No database lookup is
needed to answer a hit, and a typical click URL stays under ~250 characters.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import orjson

KINDS = ("open", "click", "unsub", "signup", "honeypot")
FIELDS = ("email", "url", "listid", "sendid", "click_tracking_id", "mail_class")
MAC_BYTES = 16  # 128 bits: forging one is out of reach, and the URL stays short
MAX_TOKEN = 2048
MAX_FIELD = 1024
VERIFIED_CACHE = 4096  # valid tokens each Signer remembers (typically ~200 bytes each)


_CONTROL_OR_SPACE = re.compile("[\x00-\x20\x7f]")


class TokenError(ValueError):
    """A token could not be made from these fields (the message says which and why)."""


def is_safe_url(url: str) -> bool:
    """Only absolute http(s) URLs with a host, and no control characters, are ever signed."""
    if not url or len(url) > MAX_FIELD or _CONTROL_OR_SPACE.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc) and bool(parts.hostname)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, kind: str, payload: bytes) -> bytes:
    # hmac.digest: OpenSSL's one-shot HMAC, no Python HMAC object per call.
    return hmac.digest(key, kind.encode() + b"\0" + payload, "sha256")[:MAC_BYTES]


def sign(key: bytes, kind: str, fields: dict[str, str | None]) -> str:
    if kind not in KINDS:
        raise TokenError(f"kind: must be one of {', '.join(KINDS)}")
    values = []
    for name in FIELDS:
        value = fields.get(name)
        value = "" if value is None else str(value)
        if len(value) > MAX_FIELD:
            raise TokenError(f"{name}: longer than {MAX_FIELD} characters")
        values.append(value)
    if values[1] and not is_safe_url(values[1]):
        raise TokenError(
            "url: must be an absolute http(s) URL without spaces or control characters"
        )
    while values and not values[-1]:
        values.pop()
    payload = orjson.dumps([kind, *values])
    return f"{_b64(payload)}.{_b64(_mac(key, kind, payload))}"


def verify(keys: Sequence[bytes], kind: str, token: str) -> dict[str, str] | None:
    """The token's fields if any key signed it for this kind, else None. Never raises.

    The checks are all required, so their order does not change the answer: the cheap
    ones (shape, base64, the payload's kind) come first and the MACs last, so a token of
    another kind (the click route also asks "is this a honeypot?") costs no HMAC.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN or token.count(".") != 1:
        return None
    body, _, mac = token.partition(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        return None
    if _b64(payload) != body or _b64(given) != mac:
        return None  # non-canonical base64 (stray padding bits): not a token we made
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, list) or not data or data[0] != kind or len(data) > len(FIELDS) + 1:
        return None
    if not all(isinstance(v, str) for v in data):
        return None
    ok = False
    for key in keys:  # every key, so timing does not say which one matched
        ok |= hmac.compare_digest(_mac(key, kind, payload), given)
    if not ok:
        return None
    fields = {name: value for name, value in zip(FIELDS, data[1:], strict=False) if value}
    if "url" in fields and not is_safe_url(fields["url"]):
        return None  # belt and braces: never hand back a target we would not sign
    return fields


PATHS = {
    "open": "/o/{}.gif",
    "click": "/c/{}",
    "unsub": "/u/{}",
    "signup": "/s/{}",
    "honeypot": "/c/{}",
}


class Signer:
    """Makes and reads tracking URLs with `tracking.secrets` (sign with the first, accept any)."""

    def __init__(self, secrets: Sequence[str], public_url: str) -> None:
        if not secrets:
            raise ValueError("at least one tracking secret is needed")
        self.keys = tuple(s.encode() for s in secrets)
        self.public_url = public_url.rstrip("/")
        # token -> (kind, fields) of tokens that verified: a pixel or link is hit again and
        # again (reloads, several recipients' clients, scanners), and a token is the exact
        # string its MAC was checked on, so a hit needs no second HMAC. Bounded, oldest
        # first out; only valid tokens are kept, so junk cannot push them out. A new
        # Signer (reload, new secrets) starts empty: a removed secret stops working.
        self._verified: dict[str, tuple[str, dict[str, str]]] = {}

    def url(self, kind: str, **fields: str | None) -> str:
        token = sign(self.keys[0], kind, fields)
        return self.public_url + PATHS[kind].format(token)

    def read(self, kind: str, token: str) -> dict[str, str] | None:
        """The token's fields (a fresh dict) if it is a valid `kind` token, else None."""
        hit = self._verified.get(token)
        if hit is not None:
            return dict(hit[1]) if hit[0] == kind else None  # a token has exactly one kind
        fields = verify(self.keys, kind, token)
        if fields is not None:
            cache = self._verified
            if len(cache) >= VERIFIED_CACHE:
                del cache[next(iter(cache))]
            cache[token] = (kind, dict(fields))
        return fields

    @property
    def prefixes(self) -> tuple[str, ...]:
        """URL prefixes of links this relay already made (the rewriter leaves them alone)."""
        return tuple(self.public_url + p.split("{")[0] for p in ("/o/", "/c/", "/u/", "/s/"))
