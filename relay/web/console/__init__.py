"""The operator console: server-rendered pages under `/console/`.

Every figure comes from `relay.admin.Admin`; this package only renders it. Pages work with
JavaScript off (each action is a form: POST → 303 → GET); `static/console.js` adds the
5-second refresh and the live tail. `guard.py` wraps every console request (auth, read-only, HTML errors, security headers),
`live.py` is the live tail.
"""

from __future__ import annotations

from .guard import serve
from .views import add_routes

__all__ = ["add_routes", "serve"]
