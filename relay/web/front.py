"""The one middleware every request passes through, outermost to innermost in one frame:

1. the query check (`common.known_query`: a parameter the route does not take is a 400);
2. under `/console`, the console's own wrapper (auth, read-only, HTML error pages and its
   security headers), which runs the guard itself;
3. elsewhere the guard (`guard.Guard.check`: Host, cross-site, body type, connection cap),
   then the handler, with every error answered as JSON;
4. the request counted by route and final status, whatever happened.

One layer instead of three: aiohttp adds a layer of its own to every chain, and each
costs a coroutine and a call per request on the hot paths (pixel, click, ingest). Its
parts are given to `front` by the app factory, so this module imports no route module.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .common import JsonError, known_query

log = logging.getLogger("relay.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Check = Callable[[web.BaseRequest], None]
Count = Callable[[web.BaseRequest, int], None]
Console = Callable[[web.Request, Handler, Check], Awaitable[web.StreamResponse]]


def is_console(path: str) -> bool:
    return path.startswith("/console") and (len(path) == 8 or path[8] == "/")


def front(count: Count, check: Check, console: Console) -> Any:
    """The middleware: `count(request, status)` for every request, `check` before every
    handler, and `console` wrapping the handlers under /console."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.query_string:
                known_query(request)
            if is_console(request.path):
                response = await console(request, handler, check)
            else:
                check(request)
                response = await handler(request)
        except JsonError as exc:
            count(request, exc.status)
            raise
        except web.HTTPException as exc:
            count(request, exc.status)
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            raise JsonError(exc.status, exc.reason.lower(), allow) from None
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            count(request, 500)
            raise JsonError(500, "internal error") from None
        count(request, response.status)
        return response

    return middleware
