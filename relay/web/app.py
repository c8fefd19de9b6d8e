"""The aiohttp application: routes, health, metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .. import soap
from ..runtime import Runtime
from . import admin_api, console, guard, ingest, links, pull, tracking
from .common import INTAKE, RUNTIME, json_response
from .front import front


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
    app = web.Application(client_max_size=runtime.config.ingest.max_body_bytes)
    app[RUNTIME] = runtime
    app[INTAKE] = runtime.intake
    app.router.add_post("/v1/events", ingest.post_events)
    app.router.add_post("/v1/links", links.post_links)
    app.router.add_post("/v1/rewrite", links.post_rewrite)
    tracking.add_routes(app)
    app.router.add_get("/v1/pull/{destination}", pull.lease)
    app.router.add_post("/v1/pull/{destination}/ack", pull.ack)
    admin_api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    soap.add_routes(app)  # Pure360's SOAP pull (/soap/pull)
    console.add_routes(app)
    # One middleware: the request counted, the guard just before every handler (after the
    # console's auth under /console), errors as JSON (as HTML pages under /console).
    app.middlewares.append(
        front(runtime.metrics.request, guard.install(app, runtime).check, console.serve)
    )
    return app
