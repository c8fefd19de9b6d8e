from __future__ import annotations

from ..helpers import base_toml, wait_for


async def test_event_goes_in_and_out_as_a_webhook(make_relay, receiver):
    relay = await make_relay(
        base_toml()
        + f'[destinations.crm]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
    )
    resp = await relay.post_events({"event_type": "bounce", "email": "a@example.com", "id": "e1"})
    assert resp.status == 202
    await wait_for(lambda: receiver.hits, what="the webhook")
    assert receiver.delivered_ids() == ["e1"]
    await wait_for(lambda: any(line["outcome"] == "delivered" for line in relay.dispatch_lines()))


async def test_the_openapi_document_is_served_and_matches_docs(make_relay):
    import json
    from pathlib import Path

    import yaml

    relay = await make_relay(base_toml())
    async with relay.http.get(f"{relay.url}/v1/openapi.json") as resp:
        assert resp.status == 200
        served = json.loads(await resp.read())
    source = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
    assert served == yaml.safe_load(source.read_text()), (
        "relay/openapi.json is stale: regenerate it from docs/openapi.yaml"
    )
