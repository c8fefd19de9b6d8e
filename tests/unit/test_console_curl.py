"""The console's "Copy as curl" is the http sender's own request, for every format and
method, with secrets as placeholders."""

from __future__ import annotations

import shlex

import orjson
import pytest

from relay.config import HttpDestination
from relay.destinations.http import build_request
from relay.models import Claimed
from relay.web.console.views import curl

EVENT = {"event_type": "bounce", "id": "e1", "email": "a@example.com", "listid": "7"}


@pytest.mark.parametrize(
    ("method", "fmt"),
    [("POST", "json"), ("POST", "form"), ("POST", "pure360"), ("GET", "form"), ("GET", "pure360")],
)
def test_curl_shows_the_request_the_sender_sends(method: str, fmt: str) -> None:
    dest = HttpDestination(
        "crm",
        "https://crm.example.com/hook?x=1",
        method=method,
        format=fmt,
        headers=(("X-Api-Key", "s3cret"),),
        signing_key=b"k" * 32,
    )
    claim = Claimed(1, 1, "e1", "bounce", orjson.dumps(EVENT), 1, 0.0)
    url, body, headers, _ = build_request(dest, [claim])
    shown = curl(dest, EVENT)
    assert shown.startswith(f"curl -X {method} {shlex.quote(url)}")
    if body is not None:
        assert shown.endswith(f"--data-binary {shlex.quote(body.decode())}")
    else:
        assert "--data-binary" not in shown
    if "Content-Type" in headers:
        assert f"Content-Type: {headers['Content-Type']}" in shown
    assert "s3cret" not in shown and headers["webhook-signature"] not in shown
    assert "X-Api-Key: <X-Api-Key from the config>" in shown
    assert "webhook-signature: <v1,signature made with signing_secret>" in shown
