"""The operator console: server-rendered pages under `/console/`.

Every figure comes from `relay.admin.Admin`; this package only renders it. Pages work with
JavaScript off (each action is a form: POST → 303 → GET); `static/console.js` adds the
5-second refresh and the live tail. `guard.py` is the security middleware, `live.py` the live tail.
"""

from __future__ import annotations

from .views import add_routes

__all__ = ["add_routes"]
