"""A tracking link never breaks: with PostgreSQL down, pixels and clicks still answer,
their events wait in the node's local spool, and reach the destinations once it is back."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import orjson

from .. import pg
from ..helpers import wait_for

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0"}


async def test_tracking_is_spooled_while_postgres_is_down(make_relay, receiver, cluster, tmp_path):
    toml = (
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{pg.fresh_schema_dsn(cluster.dsn)}"\n'
        f'path = "{tmp_path}/node.db"\npool_size = 2\n'
        f'[destinations.hook]\ntype = "http"\nurl = "{receiver.url}"\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["hook"]\n'
    )
    relay = await make_relay(toml)
    signer = relay.runtime.current.signer
    pixel = relay.url + urlsplit(signer.url("open", email="a@example.com", sendid="s1")).path
    click = (
        relay.url
        + urlsplit(
            signer.url("click", email="a@example.com", url="https://example.com/x", sendid="s1")
        ).path
    )
    async with aiohttp.ClientSession(headers=BROWSER) as http:
        cluster.stop()
        try:
            async with http.get(pixel) as r:
                assert r.status == 200 and r.content_type == "image/gif"
            async with http.get(click, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "https://example.com/x"
            async with http.post(
                f"{relay.url}/v1/events", json={"event_type": "bounce", "email": "b@example.com"}
            ) as r:
                assert r.status == 503 and "Retry-After" in r.headers
            assert relay.runtime.intake.spool.count == 2
            assert (tmp_path / "node.db.spool").exists()
        finally:
            cluster.start()
    await wait_for(lambda: len(receiver.hits) >= 2, 30, "the spooled events delivered")
    got = sorted(orjson.loads(h.body)["event_type"] for h in receiver.hits)
    assert got == ["engine_click", "engine_open"]
    # The spool forgets an event after PostgreSQL committed it, so a dispatcher woken by that
    # commit can deliver it first: wait for the spool's own step rather than race it.
    await wait_for(lambda: relay.runtime.intake.spool.count == 0, 10, "the spool emptied")
