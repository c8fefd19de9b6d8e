"""Routing: which destinations an event goes to, and when it is first due."""

from __future__ import annotations

from relay.config import HttpDestination, PullDestination, Route
from relay.domain.events import EVENT_TYPES
from relay.domain.routing import Router

NOW = 1_700_000_000.0
DESTS = {
    "crm": HttpDestination("crm", "https://crm.example.com/hook", delay_s=30.0),
    "bi": HttpDestination("bi", "https://bi.example.com/hook"),
    "audit": PullDestination("audit", delay_s=600.0),
}


def route(types, dests, **match) -> Route:
    return Route(frozenset(types), tuple(dests), tuple((k, frozenset(v)) for k, v in match.items()))


def ev(etype: str, **fields) -> dict:
    return {"event_type": etype, "id": "e1", "event_time": NOW, **fields}


def test_routes_by_event_type():
    router = Router([route({"engine_click"}, ["crm"])], DESTS)
    assert router.destinations_for(ev("engine_click")) == ("crm",)
    assert router.destinations_for(ev("engine_open")) == ()


def test_star_route_covers_every_type():
    router = Router([route(EVENT_TYPES, ["bi"])], DESTS)
    for etype in EVENT_TYPES:
        assert router.destinations_for(ev(etype)) == ("bi",)


def test_a_route_built_from_triggers_in_the_config(tmp_path):
    from relay.config import load

    path = tmp_path / "relay.toml"
    path.write_text(
        '[destinations.crm]\ntype = "http"\nurl = "https://crm.example.com/"\n'
        '[destinations.ops]\ntype = "pull"\n'
        '[[routes]]\nevents = ["CLICK", "engine_open"]\ndestinations = ["crm"]\n'
        '[[routes]]\nevents = ["bounce", "softbounce", "Blocked"]\ndestinations = ["ops"]\n'
    )
    cfg = load(path)
    router = Router(cfg.routes, cfg.destinations)
    assert router.destinations_for(ev("engine_click")) == ("crm",)
    assert router.destinations_for(ev("engine_open")) == ("crm",)
    assert router.destinations_for(ev("soft_bounce")) == ("ops",)
    assert router.destinations_for(ev("blocked")) == ("ops",)
    assert router.destinations_for(ev("optin")) == ()


def test_several_routes_and_destinations_are_deduplicated():
    router = Router(
        [
            route({"bounce", "blocked"}, ["crm", "bi"]),
            route(EVENT_TYPES, ["bi", "audit"]),
            route({"bounce"}, ["crm"]),
        ],
        DESTS,
    )
    assert router.destinations_for(ev("bounce")) == ("crm", "bi", "audit")
    assert router.destinations_for(ev("optin")) == ("bi", "audit")


def test_match_filters_on_mail_class():
    router = Router([route({"engine_click"}, ["crm"], mail_class={"transactional"})], DESTS)
    assert router.destinations_for(ev("engine_click", mail_class="transactional")) == ("crm",)
    assert router.destinations_for(ev("engine_click", mail_class="newsletter")) == ()
    assert router.destinations_for(ev("engine_click")) == ()  # no mail_class: no match


def test_match_filters_on_listid_including_numbers():
    router = Router([route(EVENT_TYPES, ["crm"], listid={"t99", "42"})], DESTS)
    assert router.destinations_for(ev("optin", listid="t99")) == ("crm",)
    assert router.destinations_for(ev("optin", listid=42)) == ("crm",)  # compared as text
    assert router.destinations_for(ev("optin", listid="t100")) == ()


def test_match_filters_combine_with_and():
    router = Router(
        [route({"bounce"}, ["crm"], mail_class={"transactional"}, listid={"t99"})], DESTS
    )
    assert router.destinations_for(ev("bounce", mail_class="transactional", listid="t99")) == (
        "crm",
    )
    assert router.destinations_for(ev("bounce", mail_class="transactional", listid="t1")) == ()
    assert router.destinations_for(ev("bounce", mail_class="newsletter", listid="t99")) == ()


def test_filtered_and_plain_routes_merge_without_duplicates():
    router = Router(
        [
            route({"bounce"}, ["bi"]),
            route({"bounce"}, ["crm", "bi"], mail_class={"transactional"}),
        ],
        DESTS,
    )
    assert router.destinations_for(ev("bounce", mail_class="transactional")) == ("bi", "crm")
    assert router.destinations_for(ev("bounce", mail_class="newsletter")) == ("bi",)


def test_unrouted_events_go_nowhere():
    router = Router([], DESTS)
    assert router.destinations_for(ev("bounce")) == ()
    assert router.deliveries_for(ev("bounce"), NOW) == ()


def test_the_first_attempt_is_due_at_event_time_plus_delay():
    router = Router([route({"bounce"}, ["crm", "bi", "audit"])], DESTS)
    event_time = NOW - 100
    assert dict(router.deliveries_for(ev("bounce", event_time=event_time), NOW)) == {
        "crm": event_time + 30,
        "bi": event_time,
        "audit": event_time + 600,
    }


def test_no_event_time_means_receipt_plus_delay():
    router = Router([route({"bounce"}, ["crm"])], DESTS)
    event = {"event_type": "bounce", "id": "e1"}
    assert router.deliveries_for(event, NOW) == (("crm", NOW + 30),)


def test_a_future_event_time_is_clamped_to_receipt():
    router = Router([route({"bounce"}, ["crm", "bi"])], DESTS)
    skewed = ev("bounce", event_time=NOW + 86_400)
    assert dict(router.deliveries_for(skewed, NOW)) == {"crm": NOW + 30, "bi": NOW}


def test_an_event_time_within_the_second_before_receipt_counts_as_receipt():
    """event_time has whole seconds: one less than a second old is the receipt itself, so a
    delay is never cut short; one a second old or more is taken as it is."""
    router = Router([route({"bounce"}, ["crm"])], DESTS)
    for age, start in [(0.5, NOW), (0.99, NOW), (1.0, NOW - 1.0), (1.5, NOW - 1.5)]:
        due = router.deliveries_for(ev("bounce", event_time=NOW - age), NOW)
        assert due == (("crm", start + 30),), age


def test_filtered_routes_give_each_destination_its_own_delay():
    router = Router(
        [route({"bounce"}, ["crm", "audit"], mail_class={"news"}), route({"bounce"}, ["bi"])],
        DESTS,
    )
    event_time = NOW - 100
    news = ev("bounce", event_time=event_time, mail_class="news")
    assert dict(router.deliveries_for(news, NOW)) == {
        "crm": event_time + 30,
        "audit": event_time + 600,
        "bi": event_time,
    }
    other = ev("bounce", event_time=event_time, mail_class="receipts")
    assert router.deliveries_for(other, NOW) == (("bi", event_time),)
