"""Schemathesis against the live daemon, from `docs/openapi.yaml`: no 5xx, every status, content
type, header and body as documented (so every error is JSON `{"error": ...}`).

Bounded for CI: a few dozen examples per operation, positive and negative.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ..helpers import DaemonProcess, base_toml, free_port

schemathesis.serializer.alias("application/x-ndjson", "text/plain")  # NDJSON is text

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
schema = schemathesis.openapi.from_path(OPENAPI)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    where = tmp_path_factory.mktemp("openapi")
    port = free_port()
    config = where / "relay.toml"
    config.write_text(
        base_toml(listen=f"127.0.0.1:{port}")
        + '[destinations.feed]\ntype = "pull"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'
    )
    daemon = DaemonProcess(config, port)
    asyncio.run(daemon.start())
    yield daemon.url
    assert daemon.proc is not None and daemon.proc.poll() is None, "relay died under fuzzing"
    daemon.kill(signal.SIGTERM)
    assert b"Traceback" not in (where / "daemon.stderr").read_bytes()


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_the_api_matches_its_document_and_never_fails(case, live):
    case.call_and_validate(base_url=live, checks=CHECKS, timeout=10)
