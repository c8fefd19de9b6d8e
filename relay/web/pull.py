"""The client-pull API's routes: lease a batch of events, ack it to remove them."""

from __future__ import annotations

import secrets
import time

import orjson
from aiohttp import web

from ..config import PullDestination
from ..destinations.pull import ack_batch, lease_batch
from ..dispatch.log import iso_ms
from .common import RUNTIME, JsonError, check_bearer, json_response

# A token nobody can send (a fresh random one each start): checking against it always fails.
UNMATCHABLE = secrets.token_urlsafe(32)


def _destination(request: web.Request) -> PullDestination:
    """The pull destination named in the path, once its token checks out.

    An unknown name answers exactly like a known one asked without its token whenever any
    pull destination has tokens, so a stranger cannot list the names by their 404s.
    """
    name = request.match_info["destination"]
    config = request.app[RUNTIME].config
    dest = config.destinations.get(name)
    if not isinstance(dest, PullDestination):
        if not config.server.loopback or any(
            isinstance(d, PullDestination) and d.tokens for d in config.destinations.values()
        ):
            check_bearer(request, (UNMATCHABLE,))
        raise JsonError(404, f"no pull destination named {name!r}")
    check_bearer(request, dest.tokens)
    return dest


async def lease(request: web.Request) -> web.Response:
    dest = _destination(request)
    raw = request.query.get("max", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= dest.max_batch:
        raise JsonError(400, f"max: must be an integer from 1 to {dest.max_batch}", field="max")
    claims = await lease_batch(request.app[RUNTIME], dest, int(raw))
    if claims is None:
        return json_response({"batch_id": None, "events": [], "paused": True})
    if not claims:
        return json_response({"batch_id": None, "events": []})
    # The stored bodies are already JSON: splice them in rather than decode and re-encode.
    body = b'{"batch_id":"%s","lease_expires":"%s","events":[%s]}' % (
        str(claims[0].lease).encode(),
        iso_ms(time.time() + dest.lease_s).encode(),
        b",".join(c.body for c in claims),
    )
    return web.Response(body=body, content_type="application/json")


async def ack(request: web.Request) -> web.Response:
    dest = _destination(request)
    try:
        batch_id = orjson.loads(await request.read()).get("batch_id")
    except (orjson.JSONDecodeError, AttributeError):
        raise JsonError(400, 'body must be {"batch_id": "..."}', field="batch_id") from None
    if not isinstance(batch_id, str) or not batch_id.isdigit() or len(batch_id) > 30:
        raise JsonError(400, "batch_id: must be the batch_id a pull returned", field="batch_id")
    ids = await ack_batch(request.app[RUNTIME], dest, int(batch_id))
    if not ids:
        raise JsonError(
            404, "unknown batch_id, or already acked, or its lease expired and it was leased again"
        )
    return json_response({"acked": len(ids)})
