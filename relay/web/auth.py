"""Who is asking: the one auth check `/v1/admin/*` and `/console/*` share.

`console_actor(request, config)` accepts a `console.tokens` entry as
`Authorization: Bearer TOKEN` (scripts, curl) or as the password of
`Authorization: Basic base64(anyuser:TOKEN)` (a browser's login prompt), and returns the actor the audit trail records: `token#1`,
`token#2`… by the token's position in `console.tokens` (a token itself is never written
anywhere). With no console tokens configured the console is open — `loopback` — but only
while `server.listen` is a loopback address; on any other listener every request is refused
with 403, so forgetting `console.tokens` never publishes the console.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from ..config import Config
from .common import JsonError

REALM = 'Basic realm="relay console"'
NEEDS_TOKENS = "console needs console.tokens on a non-loopback listener"


def _given_token(header: str) -> bytes | None:
    scheme, _, rest = header.strip().partition(" ")
    rest = rest.strip()
    if not rest:
        return None
    if scheme.lower() == "bearer":
        return rest.encode()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        _user, sep, password = decoded.partition(b":")
        return password if sep and password else None
    return None


def match_token(given: bytes, tokens: tuple[str, ...]) -> int | None:
    """The 0-based position of `given` in `tokens`, comparing every one in constant time."""
    found = None
    for i, token in enumerate(tokens):
        if hmac.compare_digest(given, token.encode()) and found is None:
            found = i
    return found


def console_actor(request: web.Request, config: Config) -> str:
    """The audit-trail name of the caller, or raise JsonError 401 (403 if the console is off).

    `config` is the one in force: the caller reads it per request, so reloaded tokens count.
    """
    tokens = config.console.tokens
    if not tokens:
        if config.server.loopback:
            return "loopback"
        raise JsonError(403, NEEDS_TOKENS)
    given = _given_token(request.headers.get("Authorization", ""))
    if given is None:
        raise JsonError(401, "missing console token", {"WWW-Authenticate": REALM})
    index = match_token(given, tokens)
    if index is None:
        raise JsonError(401, "invalid console token", {"WWW-Authenticate": REALM})
    return f"token#{index + 1}"
