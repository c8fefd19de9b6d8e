"""The aiohttp application: routes, JSON errors, bearer auth, health."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from .metrics import count_requests
from .runtime import Runtime

log = logging.getLogger("relay.web")

RUNTIME = web.AppKey("runtime", Runtime)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
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


@web.middleware
async def known_query(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse a query parameter the route does not take, naming it."""
    if request.query_string:
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
    return await handler(request)


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except JsonError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        raise JsonError(exc.status, exc.reason.lower(), allow) from None
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        raise JsonError(500, "internal error") from None


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = await request.app[RUNTIME].readiness_problems()
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, status=503)
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; OpenMetrics when the scraper asks for it."""
    runtime = request.app[RUNTIME]
    body, content_type = await runtime.metrics.scrape(runtime, request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


OPENAPI = Path(__file__).with_name("openapi.json")  # generated from docs/openapi.yaml


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


def create_app(runtime: Runtime) -> web.Application:
    from . import ingest, links, pull, tracking  # the handlers import this module for RUNTIME

    app = web.Application(
        # Counting outermost: it sees the status errors_as_json turned an exception into.
        middlewares=[count_requests(runtime.metrics), errors_as_json, known_query],
        client_max_size=runtime.config.ingest.max_body_bytes,
    )
    app[RUNTIME] = runtime
    app.router.add_post("/v1/events", ingest.post_events)
    app.router.add_post("/v1/links", links.post_links)
    app.router.add_post("/v1/rewrite", links.post_rewrite)
    tracking.add_routes(app)
    app.router.add_get("/v1/pull/{destination}", pull.lease)
    app.router.add_post("/v1/pull/{destination}/ack", pull.ack)
    from . import admin_api  # the admin JSON API (/v1/admin)

    admin_api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    from . import soap  # the seed platform's SOAP pull (/soap/pull)

    soap.add_routes(app)
    from . import console  # the operator console's HTML pages (/console/)

    console.add_routes(app)
    from . import guard  # innermost: after the console's auth, before every handler

    guard.install(app, runtime.config)
    return app
