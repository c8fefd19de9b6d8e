"""The aiohttp application: routes, health, metrics and the OpenAPI document.

`create_app` is where the web side gets the whole `Runtime` (only the probes keep it): it
builds each route surface once from the parts that surface uses (the intake, the bot
memory, one `Admin`, the pull's lease and ack, the `Current` config and signer a reload
swaps) and registers its bound methods; the guard gets `Current` too. The console's pages,
module functions, read the same parts from typed app keys it sets. No route module
imports the runtime.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..admin import Admin
from ..destinations.pull import Pull
from ..runtime import Runtime
from ..soap import SoapPull
from . import console, guard
from .admin_api import AdminApi
from .common import json_response
from .front import front
from .ingest import Ingest
from .links import Links
from .pull import PullApi
from .tracking import Tracking


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


class Probes:
    """`/readyz` and `/metrics`: both ask the runtime as a whole (is every dispatcher
    running, is the store writable; the backlog, circuits and counters)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def readyz(self, request: web.Request) -> web.Response:
        problems = await self._runtime.readiness_problems()
        if problems:
            return json_response({"status": "unavailable", "problems": problems}, status=503)
        return json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus exposition; OpenMetrics when the scraper asks for it."""
        runtime = self._runtime
        body, content_type = await runtime.metrics.scrape(runtime, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})


OPENAPI = Path(__file__).with_name("openapi.json")  # generated from docs/openapi.yaml


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


def create_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=runtime.config.ingest.max_body_bytes)
    current = runtime.current
    admin = Admin(runtime)  # one for the app's life: the admin API's and the console's
    pull = Pull(runtime.store, runtime.outcomes, runtime.is_paused)  # JSON and SOAP alike
    Ingest(runtime.intake, current).add_routes(app)
    Links(current).add_routes(app)
    Tracking(runtime.intake, runtime.bots, current).add_routes(app)
    PullApi(pull, current).add_routes(app)
    AdminApi(admin, current).add_routes(app)
    probes = Probes(runtime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/readyz", probes.readyz)
    app.router.add_get("/metrics", probes.metrics)
    SoapPull(pull, current).add_routes(app)  # Pure360's SOAP pull (/soap/pull)
    console.add_routes(app, admin, current, runtime.log)
    # One middleware: the request counted, the guard just before every handler (after the
    # console's auth under /console), errors as JSON (as HTML pages under /console).
    app.middlewares.append(
        front(runtime.metrics.request, guard.install(app, current).check, console.serve)
    )
    return app
