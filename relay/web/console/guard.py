"""Security for `/console/…`: auth, same-origin actions, read-only, headers, HTML errors.

- Every request is authenticated by `relay.web.auth.console_actor` (a console token as
  Bearer or Basic, or "loopback" when no tokens are set); the actor is kept for the audit
  trail.
- An unsafe method (POST) must be same-origin, and the `Host` one of
  `server.allowed_hosts`: that is `relay.web.guard`, the one browser-safety policy of the
  whole HTTP surface (its refusals reach this middleware and become HTML pages here).
- `console.read_only` refuses every POST with 403 (the pages hide the forms).
- Every console response (pages, static files, the SSE stream, errors) carries a strict
  CSP (`script-src 'self'`, no inline script or style), `X-Frame-Options: DENY`,
  `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.
- Errors under /console are HTML pages, not the API's JSON.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp_jinja2
import jinja2
import orjson
from aiohttp import web

from ...current import Current
from ..common import JsonError
from ..front import Check

log = logging.getLogger("relay.console")

ACTOR = web.RequestKey("console_actor", str)
JINJA = web.AppKey("console_jinja", jinja2.Environment)
# The config in force (tokens, read-only, what the pages show), set by `views.add_routes`.
CURRENT = web.AppKey("console_current", Current)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render(name: str, request: web.Request, ctx: dict[str, Any], status: int = 200) -> web.Response:
    """A template with what every page shows (who, read-only) added to `ctx`."""
    cfg = request.app[CURRENT].config.console
    common = {"actor": request.get(ACTOR, ""), "read_only": cfg.read_only, "path": request.path}
    return aiohttp_jinja2.render_template(
        name, request, {"flash": None, **common, **ctx}, app_key=JINJA, status=status
    )


def error_page(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    response = render(
        "error.html", request, {"status": status, "message": message, "title": f"{status}"}, status
    )
    if headers:
        response.headers.update(headers)
    return response


async def serve(request: web.Request, handler: Any, check: Check) -> web.StreamResponse:
    """A console request: `relay.web.front` hands every request under /console here. It
    runs `check` (`relay.web.guard`) just before the handler, so the check's refusals
    become HTML pages like every console error, and puts the security headers on every
    answer (a streamed one sets them itself, before it starts)."""
    try:
        response = await _console(request, handler, check)
    except web.HTTPException as exc:  # a redirect: errors became pages
        exc.headers.update(HEADERS)
        raise
    if not response.prepared:
        response.headers.update(HEADERS)
    return response


async def _console(request: web.Request, handler: Any, check: Check) -> web.StreamResponse:
    from ..auth import console_actor

    try:
        config = request.app[CURRENT].config  # per request: reloaded tokens count at once
        request[ACTOR] = console_actor(request, config)
        if request.method not in SAFE_METHODS and config.console.read_only:
            return error_page(request, 403, "The console is read-only (console.read_only).")
        check(request)
        return await handler(request)
    except JsonError as exc:
        try:
            message = orjson.loads(exc.text or "{}").get("error", exc.reason)
        except orjson.JSONDecodeError:
            message = exc.reason
        keep = {k: v for k, v in exc.headers.items() if k in ("WWW-Authenticate", "Allow")}
        return error_page(request, exc.status, message, keep)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        keep = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_page(request, exc.status, exc.text or exc.reason, keep)
    except Exception:
        log.exception("console error on %s %s", request.method, request.path)
        return error_page(request, 500, "Internal error (see the daemon's log).")
