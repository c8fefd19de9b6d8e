"""The client-pull API's routes: lease a batch of events, ack it to remove them.

`PullApi` is given the lease and ack (`destinations.pull.Pull`) and the current config
(destinations and their tokens), and nothing else.
"""

from __future__ import annotations

import secrets
import time

import orjson
from aiohttp import web

from ..config import PullDestination
from ..current import Current
from ..destinations.pull import Pull
from ..dispatch.log import iso_ms
from .common import JsonError, check_bearer, json_response

# A token nobody can send (a fresh random one each start): checking against it always fails.
UNMATCHABLE = secrets.token_urlsafe(32)


class PullApi:
    """`GET /v1/pull/{destination}` and `POST /v1/pull/{destination}/ack`."""

    def __init__(self, pull: Pull, current: Current) -> None:
        self._pull = pull
        self._current = current

    def _destination(self, request: web.Request) -> PullDestination:
        """The pull destination named in the path, once its token checks out.

        An unknown name answers exactly like a known one asked without its token whenever
        any pull destination has tokens, so a stranger cannot list the names by their 404s.
        """
        name = request.match_info["destination"]
        config = self._current.config
        dest = config.destinations.get(name)
        if not isinstance(dest, PullDestination):
            if not config.server.loopback or any(
                isinstance(d, PullDestination) and d.tokens for d in config.destinations.values()
            ):
                check_bearer(request, (UNMATCHABLE,))
            raise JsonError(404, f"no pull destination named {name!r}")
        check_bearer(request, dest.tokens)
        return dest

    async def lease(self, request: web.Request) -> web.Response:
        dest = self._destination(request)
        raw = request.query.get("max", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= dest.max_batch:
            raise JsonError(400, f"max: must be an integer from 1 to {dest.max_batch}", field="max")
        claims = await self._pull.lease(dest, int(raw))
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

    async def ack(self, request: web.Request) -> web.Response:
        dest = self._destination(request)
        try:
            batch_id = orjson.loads(await request.read()).get("batch_id")
        except (orjson.JSONDecodeError, AttributeError):
            raise JsonError(400, 'body must be {"batch_id": "..."}', field="batch_id") from None
        if not isinstance(batch_id, str) or not batch_id.isdigit() or len(batch_id) > 30:
            raise JsonError(400, "batch_id: must be the batch_id a pull returned", field="batch_id")
        ids = await self._pull.ack(dest, int(batch_id))
        if not ids:
            raise JsonError(
                404,
                "unknown batch_id, or already acked, or its lease expired and it was leased again",
            )
        return json_response({"acked": len(ids)})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/pull/{destination}", self.lease)
        app.router.add_post("/v1/pull/{destination}/ack", self.ack)
