"""Pause, resume and replay by clicking the console's buttons, with JavaScript on and off."""

from __future__ import annotations

from .conftest import event, http_destination, number, route_all, wait_until


def ids_after(receiver, start: int) -> list[str]:
    """Event ids the receiver was sent since its `start`-th request."""
    import orjson

    ids = []
    for hit in receiver.hits[start:]:
        data = orjson.loads(hit.body)
        ids += [e["id"] for e in (data if isinstance(data, list) else [data])]
    return ids


def pause_then_resume(b, relay, receiver, shots: str) -> None:
    """Click Pause, send events (nothing goes out, depth grows), click Resume (drains to 0)."""
    b.open("/console/destinations/crm")
    assert b.text("form.pause code.cli") == "relay pause crm"
    assert b.text("form.resume code.cli") == "relay resume crm"
    b.button("Pause", "form.pause").click()
    wait_until(lambda: "Paused crm" in b.text("#flash"), 10, "the pause to be confirmed")
    assert b.url_path() == "/console/destinations/crm"  # POST → 303 → GET
    assert b.row("crm")["state"] == "paused"

    before = len(receiver.hits)
    ids = relay.post_events([event(n) for n in range(10, 15)])
    b.wait_row("crm", lambda r: number(r["pending"]) == 5, what="the backlog to grow to 5")
    assert relay.admin("/destinations")  # the daemon is alive and answering
    assert len(receiver.hits) == before, "sent while paused"
    sent = [line for line in relay.dispatch_lines() if line.get("event_id") in ids]
    assert sent == [], sent
    b.shot(f"{shots}-paused")
    if b.js:
        b.shot("destination-paused", docs=True)

    b.button("Resume", "form.resume").click()
    wait_until(lambda: "Resumed crm" in b.text("#flash"), 10, "the resume to be confirmed")
    row = b.wait_row(
        "crm", lambda r: r["state"] == "ok" and number(r["pending"]) == 0, what="drained to 0"
    )
    assert sorted(ids_after(receiver, before)) == sorted(ids), row
    # The filter that found nothing while paused finds each delivery now (it can fail).
    wait_until(
        lambda: (
            sorted(
                line["event_id"]
                for line in relay.dispatch_lines()
                if line.get("event_id") in ids and line["outcome"] == "delivered"
            )
            == sorted(ids)
        ),
        10,
        "a delivered line for each resumed event",
    )
    b.shot(f"{shots}-resumed")


def make_dead(relay, receiver, n_ok: int = 2, n_dead: int = 3) -> tuple[list[str], list[str]]:
    """Deliver `n_ok` events, then let `n_dead` die on a 500 (max_attempts = 1)."""
    ok = relay.post_events([event(n) for n in range(n_ok)])
    wait_until(lambda: len(receiver.hits) == n_ok, 10, "the first deliveries")
    receiver.default = 500
    dead = relay.post_events([event(100 + n) for n in range(n_dead)])

    def all_dead() -> bool:
        rows = {r["name"]: r for r in relay.admin("/destinations")["destinations"]}
        return rows["crm"]["dead"] == n_dead and rows["crm"]["pending"] == 0

    wait_until(all_dead, 10, f"{n_dead} dead deliveries")
    receiver.default = 200
    return ok, dead


def confirm_replay(b, relay, receiver, dead: list[str], shots: str, docs: bool = False) -> None:
    """On the dry run's page: the count and sample ids; confirm; exactly those ids arrive."""
    wait_until(lambda: b.css("#replay-count"), 10, "the dry run's confirmation page")
    assert number(b.text("#replay-count")) == len(dead)
    samples = b.text("#replay-samples")
    assert all(i in samples for i in dead), samples
    assert "relay dead replay" in b.text("code.cli")
    b.shot(f"{shots}-replay-confirm")
    if docs:
        b.shot("replay-confirm", docs=True)
    before = len(receiver.hits)
    assert before == 2 + len(dead)  # the dry run sent nothing
    b.button("Replay").click()
    wait_until(lambda: f"Replayed {len(dead)}" in b.text("#flash"), 10, "the replay's flash")
    wait_until(lambda: len(receiver.hits) >= before + len(dead), 10, "the replayed deliveries")
    assert sorted(ids_after(receiver, before)) == sorted(dead)
    b.open("/console/")
    b.wait_row("crm", lambda r: number(r["dead"]) == 0 and number(r["pending"]) == 0)
    b.shot(f"{shots}-replayed")


def config(receiver) -> str:
    return http_destination(
        "crm",
        receiver.url,
        "retry = { max_attempts = 1 }",
        "circuit = { failures = 0 }",
    ) + route_all("crm")


def test_pause_holds_the_backlog_and_resume_drains_it(browser, start_relay, make_receiver):
    receiver = make_receiver()
    relay = start_relay(config(receiver))
    browser.base = relay.url
    pause_then_resume(browser, relay, receiver, "js")
    browser.open("/console/")
    audit = browser.text("#audit")
    assert "pause" in audit and "resume" in audit and "loopback" in audit, audit


def test_dead_letters_replay_after_a_dry_run(browser, start_relay, make_receiver):
    receiver = make_receiver()
    relay = start_relay(config(receiver))
    _, dead = make_dead(relay, receiver)
    browser.base = relay.url
    browser.open("/console/destinations/crm")
    assert len(browser.css_all('tr.attempt[data-outcome="dead"]')) == 3
    browser.button("Replay…", "form.replay").click()
    confirm_replay(browser, relay, receiver, dead, "js", docs=True)


def test_dead_letters_page_groups_by_cause(browser, start_relay, make_receiver):
    receiver = make_receiver(error_text="upstream timeout")
    relay = start_relay(config(receiver))
    _, dead = make_dead(relay, receiver)
    browser.base = relay.url
    browser.open("/console/dead")
    groups = browser.css_all("#dead-groups tr[data-group]")
    assert len(groups) == 1, [g.text for g in groups]
    assert (
        "500" in groups[0].text
        and number(groups[0].find_element("css selector", ".count").text) == 3
    )
    browser.shot("dead", docs=True)
    browser.button("Replay…", "#dead-groups form.replay").click()
    confirm_replay(browser, relay, receiver, dead, "dead-page")


def test_without_javascript_pause_and_replay_still_work(browser_nojs, start_relay, make_receiver):
    receiver = make_receiver()
    relay = start_relay(config(receiver))
    b = browser_nojs
    b.base = relay.url
    pause_then_resume(b, relay, receiver, "nojs")
    receiver.hits.clear()
    _, dead = make_dead(relay, receiver)
    b.open("/console/destinations/crm")
    b.button("Replay…", "form.replay").click()
    confirm_replay(b, relay, receiver, dead, "nojs")


def test_replay_on_an_open_circuit_delivers_within_seconds(browser, start_relay, make_receiver):
    # The receiver fails until the circuit opens with an hour's cooldown; the operator fixes
    # it and replays from the console: a probe goes at once and the dead events follow.
    receiver = make_receiver()
    relay = start_relay(
        http_destination(
            "crm",
            receiver.url,
            "concurrency = 1",
            "retry = { max_attempts = 1 }",
            'circuit = { failures = 3, cooldown = "1h", max_cooldown = "1h" }',
        )
        + route_all("crm")
    )
    _, dead = make_dead(relay, receiver)
    browser.base = relay.url
    browser.open("/console/")
    browser.wait_row("crm", lambda r: "circuit" in r["state"])
    browser.shot("circuit-open")
    browser.open("/console/destinations/crm")
    browser.button("Replay…", "form.replay").click()
    wait_until(lambda: browser.css("#replay-count"), 10, "the dry run's confirmation page")
    before = len(receiver.hits)
    browser.button("Replay").click()
    wait_until(lambda: f"Replayed {len(dead)}" in browser.text("#flash"), 10, "the flash")
    # Within a few seconds, not after the hour's cooldown.
    wait_until(lambda: len(receiver.hits) >= before + len(dead), 5, "the replayed deliveries")
    assert sorted(ids_after(receiver, before)) == sorted(dead)
    browser.open("/console/")
    browser.wait_row("crm", lambda r: number(r["dead"]) == 0 and r["state"].strip() == "ok")
    browser.shot("circuit-replayed")
