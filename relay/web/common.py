"""What every route module shares, and nothing else: JSON answers and errors, the query
parameters each route takes, and bearer auth. A leaf: it imports no route module, so route
modules import it and only the app factory imports them. (What a route works with, it is
given by the app factory, to its surface's constructor.)"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("relay.web")


JSON_HEADERS = {"Content-Type": "application/json"}


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # The type as a header, not `content_type=`: aiohttp then skips parsing it (a third
    # of the cost of building the response, which every API answer pays).
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS,
    )


class JsonError(web.HTTPException):
    """An error answered as `{"error": message, ...extra}` with the given status."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        self.status_code = status
        super().__init__(
            headers=headers,
            # text=, not body=: aiohttp deprecates body= on HTTPException (a warning per error)
            text=orjson.dumps({"error": message, **extra}).decode(),
            content_type="application/json",
        )


def check_bearer(request: web.Request, tokens: Iterable[str]) -> None:
    """Require `Authorization: Bearer <one of tokens>`; no tokens configured means open.

    (Open is only allowed on loopback: the config refuses it anywhere else.) Every token
    is compared in constant time, and all of them are compared, so timing tells nothing.
    """
    tokens = tuple(tokens)
    if not tokens:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise JsonError(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    given_b = given.strip().encode()
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given_b, token.encode())
    if not ok:
        raise JsonError(401, "invalid bearer token", {"WWW-Authenticate": "Bearer"})


# The query parameters each route takes; any other is a 400 naming it (a typo such as
# `?maxx=5` would otherwise be ignored and the default used). The admin API checks its own;
# the tracking routes a recipient's browser opens (/o, /c, /u, /s) take what comes, because
# a mail client or gateway may append parameters and a click must never break.
QUERY_PARAMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/events"): (),
    ("POST", "/v1/links"): (),
    ("POST", "/v1/rewrite"): (),
    ("GET", "/v1/pull/{destination}"): ("max",),
    ("POST", "/v1/pull/{destination}/ack"): (),
    ("GET", "/healthz"): (),
    ("GET", "/readyz"): (),
    ("GET", "/metrics"): (),
    ("GET", "/v1/openapi.json"): (),
    ("GET", "/soap/pull"): ("wsdl",),
    ("POST", "/soap/pull"): (),
    # The console's pages: their filter forms' fields, and `flash` after a POST → 303.
    ("GET", "/console/"): ("flash",),
    ("GET", "/console/destinations/{name}"): (
        "flash", "outcome", "event_type", "since", "until", "before",
    ),
    ("GET", "/console/events/{id}"): ("flash",),
    ("GET", "/console/dead"): ("flash", "destination", "after"),
    ("GET", "/console/tail"): ("flash", "destination", "event_type", "outcome"),
    ("GET", "/console/tail/stream"): ("destination", "event_type", "outcome", "after"),
}  # fmt: skip


def known_query(request: web.BaseRequest) -> None:
    """Refuse a query parameter the route does not take, naming it (a 400)."""
    route = request.match_info.route
    method = "GET" if request.method == "HEAD" else request.method
    key = (method, route.resource.canonical if route.resource is not None else "")
    allowed = QUERY_PARAMS.get(key)
    if allowed is not None:
        for name in request.query:
            if name not in allowed:
                legal = ", ".join(allowed) or "none"
                raise JsonError(
                    400, f"{name}: unknown query parameter (allowed: {legal})", field=name
                )
