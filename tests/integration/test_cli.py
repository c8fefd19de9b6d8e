"""The `relay` command line, run as a real subprocess against the database of a
relay that is running in this process at the same time."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path

import orjson
import pytest

from relay.admin import group_id, signature
from relay.store.sqlite import SqliteStore

from ..helpers import RunningRelay, base_toml, free_port, wait_for

STATS_KEYS = {"pending", "leased", "dead", "delivered", "oldest_pending_s"}
ROUTE_FEED = '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'


async def cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> tuple[int, str, str]:
    """Run `python -m relay ARGS`; return (exit status, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={**environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError(f"relay {' '.join(args)} did not finish in 30 s") from None
    return proc.returncode, out.decode(), err.decode()


async def run_ok(relay: RunningRelay, *args: str) -> str:
    """Run a command with `-c` after the subcommand; it must succeed."""
    code, out, err = await cli(*args, "-c", str(relay.config_path))
    assert code == 0, f"relay {' '.join(args)} exited {code}: {err}"
    return out


def http_dest(name: str, url: str, **extra: str) -> str:
    lines = [f"[destinations.{name}]", 'type = "http"', f'url = "{url}"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def route(events: str, *destinations: str) -> str:
    names = ", ".join(f'"{d}"' for d in destinations)
    return f"[[routes]]\nevents = [{events}]\ndestinations = [{names}]\n"


def bounce(i: int | str) -> dict:
    return {"id": f"ev{i}", "event_type": "bounce", "email": f"user{i}@example.com"}


async def dead_count(relay: RunningRelay, destination: str) -> int:
    stats = await relay.store.stats()
    d = stats.destinations.get(destination)
    return d.dead if d else 0


async def dead_count_is(relay: RunningRelay, destination: str, n: int) -> bool:
    return await dead_count(relay, destination) == n


async def crm_delivered(relay: RunningRelay, n: int) -> bool:
    return (await relay.store.stats()).destinations["crm"].delivered == n


# -- stats ---------------------------------------------------------------------------------


@pytest.fixture
async def busy_relay(make_relay, receiver):
    """crm (webhook, delivered 3), feed (pull: 1 leased, 2 pending), idle (nothing), 1 unrouted."""
    relay = await make_relay(
        base_toml()
        + http_dest("crm", receiver.url)
        + http_dest("idle", receiver.url)
        + '[destinations.feed]\ntype = "pull"\n'
        + route('"BOUNCE"', "crm", "feed")
    )
    resp = await relay.post_events([bounce(i) for i in range(3)])
    assert resp.status == 202
    resp = await relay.post_events({"id": "sms", "event_type": "sms_failed", "phone": "+1555"})
    assert resp.status == 202
    await wait_for(
        lambda: (
            len(receiver.hits) == 3
            and sum(x["outcome"] == "delivered" for x in relay.dispatch_lines()) == 3
        ),
        what="crm to receive three events",
    )
    async with relay.http.get(f"{relay.url}/v1/pull/feed?max=1") as r:
        assert len((await r.json())["events"]) == 1
    return relay


async def test_stats_json_has_the_documented_shape(busy_relay):
    stats = orjson.loads(await run_ok(busy_relay, "stats", "--json"))
    assert set(stats) == {"events", "unrouted", "destinations"}
    assert (stats["events"], stats["unrouted"]) == (4, 1)
    assert set(stats["destinations"]) == {"crm", "feed", "idle"}
    for d in stats["destinations"].values():
        assert set(d) == STATS_KEYS
    assert stats["destinations"]["crm"] == {
        "pending": 0,
        "leased": 0,
        "dead": 0,
        "delivered": 3,
        "oldest_pending_s": None,
    }
    assert stats["destinations"]["idle"] == {
        "pending": 0,
        "leased": 0,
        "dead": 0,
        "delivered": 0,
        "oldest_pending_s": None,
    }
    feed = stats["destinations"]["feed"]
    assert (feed["pending"], feed["leased"], feed["dead"], feed["delivered"]) == (2, 1, 0, 0)
    assert isinstance(feed["oldest_pending_s"], float) and 0 <= feed["oldest_pending_s"] < 60


async def test_stats_for_humans(busy_relay):
    out = await run_ok(busy_relay, "stats")
    lines = out.splitlines()
    assert "events: 4" in lines[0] and "unrouted: 1" in lines[0]
    header = lines[1].split()
    assert header[:5] == ["destination", "pending", "leased", "dead", "delivered"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["crm"] == ["0", "0", "0", "3", "-"]
    assert rows["feed"][:4] == ["2", "1", "0", "0"] and rows["feed"][4].endswith("s")
    assert rows["idle"] == ["0", "0", "0", "0", "-"]


async def test_config_option_before_or_after_the_subcommand_and_from_the_environment(
    busy_relay, tmp_path
):
    config = str(busy_relay.config_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = await cli("-c", config, "stats", "--json", cwd=elsewhere)
    after = await cli("stats", "--json", f"--config={config}", cwd=elsewhere)
    from_env = await cli("stats", "--json", cwd=elsewhere, env={"RELAY_CONFIG": config})
    from_cwd = await cli("stats", "--json", cwd=busy_relay.dir)  # ./relay.toml
    for code, out, err in (before, after, from_env, from_cwd):
        assert code == 0, err
        assert orjson.loads(out)["events"] == 4


async def test_bad_usage_exits_2(busy_relay):
    for args in (["stats", "--bogus"], ["dead"], ["frobnicate"], []):
        code, out, err = await cli(*args, "-c", str(busy_relay.config_path))
        assert code == 2, args
        assert out == "" and err


async def test_stats_without_a_database_fails_with_one_line(tmp_path):
    (tmp_path / "relay.toml").write_text(base_toml(db="missing.db"))
    code, out, err = await cli("stats", "-c", str(tmp_path / "relay.toml"))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "missing.db" in err
    assert not (tmp_path / "missing.db").exists()


# -- dead letters --------------------------------------------------------------------------


async def test_dead_list_shows_dead_deliveries(make_relay):
    down_url = f"http://127.0.0.1:{free_port()}/hook"  # connections are refused
    relay = await make_relay(
        base_toml()
        + http_dest("down", down_url, retry="{ max_attempts = 1 }")
        + '[destinations.feed]\ntype = "pull"\n'
        + route('"*"', "down", "feed")
    )
    await relay.post_events([bounce(1), bounce(2)])
    await wait_for(
        lambda: dead_count_is(relay, "down", 2), 10, "both deliveries to be declared dead"
    )

    out = await run_ok(relay, "dead", "list")
    lines = out.splitlines()
    assert len(lines) == 2
    for line, event_id in zip(sorted(lines), ["ev1", "ev2"], strict=True):
        assert line.startswith(event_id)
        assert "down" in line and "bounce" in line and "attempts=1" in line
        assert "cannot connect" in line

    rows = [
        orjson.loads(line) for line in (await run_ok(relay, "dead", "list", "--json")).splitlines()
    ]
    assert sorted(r["event_id"] for r in rows) == ["ev1", "ev2"]
    for r in rows:
        assert (r["destination"], r["event_type"], r["attempts"]) == ("down", "bounce", 1)
        assert r["last_error"].startswith("cannot connect")

    assert await run_ok(relay, "dead", "list", "--destination", "feed") == ""
    assert len((await run_ok(relay, "dead", "list", "--destination", "down")).splitlines()) == 2


@pytest.fixture
async def flaky(make_relay, receiver):
    """A relay whose `crm` receiver answered 500 (max_attempts = 1): ev1, ev2 are dead."""
    receiver.default = 500
    relay = await make_relay(
        base_toml()
        + http_dest("crm", receiver.url, retry="{ max_attempts = 1 }")
        + route('"*"', "crm")
    )
    await relay.post_events([bounce(1), bounce(2)])
    await wait_for(lambda: dead_count_is(relay, "crm", 2), 10, "two dead deliveries")
    receiver.default = 200  # the receiver is fixed
    receiver.hits.clear()
    return relay


async def test_dead_replay_by_destination_delivers_again(flaky, receiver):
    assert "would replay 2" in await run_ok(
        flaky, "dead", "replay", "--destination", "crm", "--dry-run"
    )
    await asyncio.sleep(0.5)  # a window for a wrong send (one would come within milliseconds)
    assert receiver.hits == [] and await dead_count(flaky, "crm") == 2

    assert "replayed 0" in await run_ok(flaky, "dead", "replay", "--destination", "other")
    assert "replayed 2" in await run_ok(flaky, "dead", "replay", "--destination", "crm")
    # The running relay notices within 5 s, with a fresh attempt count.
    await wait_for(lambda: len(receiver.hits) == 2, 6, "the replayed deliveries")
    assert sorted(receiver.delivered_ids()) == ["ev1", "ev2"]
    await wait_for(lambda: crm_delivered(flaky, 2), 5, "the deliveries to be recorded")
    assert await run_ok(flaky, "dead", "list") == ""
    delivered = [x for x in flaky.dispatch_lines() if x.get("outcome") == "delivered"]
    assert [x["attempt"] for x in delivered] == [1, 1]
    # Each replay is on the audit trail, as one made from the console is.
    audit = [x for x in flaky.dispatch_lines() if "audit" in x][-1]
    assert (audit["actor"], audit["action"], audit["target"], audit["count"]) == (
        "cli",
        "replay",
        "crm",
        2,
    )


async def test_dead_replay_by_id_replays_only_that_event(flaky, receiver):
    assert "replayed 1" in await run_ok(flaky, "dead", "replay", "--id", "ev2")
    await wait_for(lambda: receiver.hits, 6, "the replayed delivery")
    assert receiver.delivered_ids() == ["ev2"]
    [row] = [orjson.loads(x) for x in (await run_ok(flaky, "dead", "list", "--json")).splitlines()]
    assert row["event_id"] == "ev1"


async def test_dead_replay_by_time_window(flaky, receiver):
    # Both events were received moments ago: none before an hour ago, both since.
    assert "replayed 0" in await run_ok(flaky, "dead", "replay", "--until", "1h")
    assert "replayed 2" in await run_ok(flaky, "dead", "replay", "--since", "1h")
    await wait_for(lambda: len(receiver.hits) == 2, 6, "the replayed deliveries")


async def test_dead_replay_rejects_a_bad_time(flaky):
    code, out, err = await cli(
        "dead", "replay", "--since", "yesterday-ish", "-c", str(flaky.config_path)
    )
    assert code == 2 and "yesterday-ish" in err
    assert await dead_count(flaky, "crm") == 2


# -- pause and resume ----------------------------------------------------------------------


async def test_pause_stops_delivery_in_the_running_relay_and_resume_restarts_it(
    make_relay, receiver
):
    relay = await make_relay(base_toml() + http_dest("crm", receiver.url) + route('"*"', "crm"))
    out = await run_ok(relay, "pause", "crm")
    assert out.strip() == "paused crm"
    await wait_for(lambda: relay.runtime.is_paused("crm"), 5, "the relay to see the pause")

    await relay.post_events([bounce(1), bounce(2)])
    await asyncio.sleep(0.5)  # the pause is in force (above): a send would come within ms
    assert receiver.hits == []
    stats = orjson.loads(await run_ok(relay, "stats", "--json"))
    assert stats["destinations"]["crm"]["pending"] == 2  # the backlog is kept

    assert (await run_ok(relay, "resume", "crm")).strip() == "resumed crm"
    await wait_for(lambda: len(receiver.hits) == 2, 6, "delivery after resume")
    assert sorted(receiver.delivered_ids()) == ["ev1", "ev2"]


async def test_pause_for_a_while_resumes_by_itself(make_relay, receiver):
    relay = await make_relay(base_toml() + http_dest("crm", receiver.url) + route('"*"', "crm"))
    before = time.time()
    assert "paused crm for 3s" in await run_ok(relay, "pause", "crm", "--for", "3s")
    await wait_for(lambda: relay.runtime.is_paused("crm"), 3, "the relay to see the pause")
    await relay.post_events([bounce(1)])
    await wait_for(lambda: receiver.hits, 8, "delivery once the pause ran out")
    assert receiver.delivered_ids() == ["ev1"]
    assert receiver.hits[0].at >= before + 3  # not a moment before the pause ran out
    assert await relay.store.paused() == {}


async def test_pause_of_a_pull_destination_holds_its_batches(make_relay):
    relay = await make_relay(
        base_toml() + '[destinations.feed]\ntype = "pull"\n' + route('"*"', "feed")
    )
    await run_ok(relay, "pause", "feed")

    async def pull() -> dict:
        async with relay.http.get(f"{relay.url}/v1/pull/feed") as r:
            return await r.json()

    async def paused() -> bool:
        return (await pull()).get("paused") is True

    await wait_for(paused, 5, "the pull API to report the pause")
    await relay.post_events([bounce(1)])
    assert await pull() == {"batch_id": None, "events": [], "paused": True}
    await run_ok(relay, "resume", "feed")

    async def resumed() -> bool:
        return [e["id"] for e in (await pull())["events"]] == ["ev1"]

    await wait_for(resumed, 5, "the pull API to hand out events again")


@pytest.mark.parametrize("command", ["pause", "resume"])
async def test_pause_or_resume_of_an_unknown_destination_fails(make_relay, receiver, command):
    relay = await make_relay(base_toml() + http_dest("crm", receiver.url) + route('"*"', "crm"))
    code, out, err = await cli(command, "nope", "-c", str(relay.config_path))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "nope" in err
    assert await relay.store.paused() == {}


# -- backup and migrate --------------------------------------------------------------------


async def test_backup_while_running_has_the_same_events(make_relay, receiver, tmp_path):
    relay = await make_relay(
        base_toml() + '[destinations.feed]\ntype = "pull"\n' + route('"*"', "feed")
    )
    await relay.post_events([bounce(i) for i in range(50)])
    target = tmp_path / "copy" / "backup.db"
    target.parent.mkdir()
    out = await run_ok(relay, "backup", str(target))
    assert str(target) in out

    copy = SqliteStore(target)
    await copy.open()
    try:
        stats = await copy.stats()
        assert stats.events == 50 and stats.destinations["feed"].pending == 50
        claimed = await copy.claim("feed", 100, 60)
        assert sorted(c.event_id for c in claimed) == sorted(f"ev{i}" for i in range(50))
        assert orjson.loads(claimed[0].body)["email"].endswith("@example.com")
    finally:
        await copy.close()
    # The copy is a plain SQLite file anyone can open.
    with sqlite3.connect(target) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()

    code, _, err = await cli("backup", str(target), "-c", str(relay.config_path))
    assert code == 1 and "exists" in err and len(err.strip().splitlines()) == 1


async def test_db_migrate_creates_and_reports_the_schema(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(
        base_toml(db="fresh.db") + '[destinations.feed]\ntype = "pull"\n' + ROUTE_FEED
    )
    code, out, err = await cli("db", "migrate", "-c", str(config))
    assert code == 0, err
    assert out.startswith("schema version ")
    version = int(out.split()[-1])
    assert version >= 1
    code, out, _ = await cli("db", "migrate", "-c", str(config))  # again: nothing to do
    assert (code, int(out.split()[-1])) == (0, version)
    stats = orjson.loads((await cli("stats", "--json", "-c", str(config)))[1])
    assert stats == {
        "events": 0,
        "unrouted": 0,
        "destinations": {
            "feed": {"pending": 0, "leased": 0, "dead": 0, "delivered": 0, "oldest_pending_s": None}
        },
    }


async def test_db_migrate_while_the_relay_runs(busy_relay):
    assert (await run_ok(busy_relay, "db", "migrate")).startswith("schema version ")
    assert (await busy_relay.post_events(bounce("after"))).status == 202


async def test_db_migrate_refuses_a_newer_schema_or_a_file_that_is_not_a_database(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(base_toml(db="relay.db"))
    assert (await cli("db", "migrate", "-c", str(config)))[0] == 0
    with sqlite3.connect(tmp_path / "relay.db") as db:
        db.execute("PRAGMA user_version = 9999")
    db.close()
    code, out, err = await cli("db", "migrate", "-c", str(config))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "newer" in err

    (tmp_path / "relay.db").unlink()
    for extra in ("relay.db-wal", "relay.db-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    (tmp_path / "relay.db").write_bytes(b"this is not a database " * 100)
    code, out, err = await cli("stats", "-c", str(config))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "not a database" in err


# -- tail ----------------------------------------------------------------------------------


@pytest.fixture
async def logged(make_relay, receiver):
    """A dispatch log with two `delivered` lines (crm) and two `dead` lines (down)."""
    down_url = f"http://127.0.0.1:{free_port()}/hook"
    relay = await make_relay(
        base_toml()
        + http_dest("crm", receiver.url)
        + http_dest("down", down_url, retry="{ max_attempts = 1 }")
        + route('"*"', "crm", "down")
    )
    await relay.post_events(
        [bounce(1), {"id": "ev2", "event_type": "scomp", "email": "b@example.com"}]
    )
    await wait_for(lambda: len(relay.dispatch_lines()) == 4, 10, "four dispatch log lines")
    return relay


async def test_tail_json_filters_by_outcome(logged):
    out = await run_ok(logged, "tail", "--json", "--outcome", "delivered")
    lines = [orjson.loads(x) for x in out.splitlines()]
    assert len(lines) == 2
    assert {x["event_id"] for x in lines} == {"ev1", "ev2"}
    assert all(x["outcome"] == "delivered" and x["destination"] == "crm" for x in lines)
    assert all(x["status"] == 200 for x in lines)

    dead = [
        orjson.loads(x)
        for x in (await run_ok(logged, "tail", "--json", "--outcome", "dead")).splitlines()
    ]
    assert {(x["destination"], x["event_id"]) for x in dead} == {("down", "ev1"), ("down", "ev2")}


async def test_tail_filters_by_destination_and_event_type(logged):
    out = await run_ok(logged, "tail", "--json", "--destination", "down", "--event-type", "scomp")
    [line] = [orjson.loads(x) for x in out.splitlines()]
    assert (line["event_id"], line["destination"], line["outcome"]) == ("ev2", "down", "dead")
    assert await run_ok(logged, "tail", "--destination", "nowhere") == ""


async def test_tail_pretty_by_default(logged):
    out = await run_ok(logged, "tail")
    lines = out.splitlines()
    assert len(lines) == 4
    for line in lines:
        assert not line.startswith("{")  # one readable line per attempt, not raw JSON
        assert line[:4].isdigit() and "Z" in line.split()[0]  # starts with the timestamp
    delivered = [x for x in lines if " delivered " in f" {x} "]
    dead = [x for x in lines if " dead " in f" {x} "]
    assert len(delivered) == 2 and len(dead) == 2
    assert all("crm" in x and "status=200" in x for x in delivered)
    assert all("down" in x and "cannot connect" in x for x in dead)
    assert any("ev1" in x for x in dead) and any("ev2" in x for x in dead)


async def test_tail_where_no_dispatch_log_exists_says_where_it_looked(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(base_toml())
    code, out, err = await cli("tail", "-c", str(config))
    assert (code, out) == (1, "")
    assert err.strip() == (
        f"relay tail: no dispatch log at {tmp_path / 'dispatch.log'}"
        " ([log] dispatch; has relay serve run with this config?)"
    )
    (tmp_path / "dispatch.log").write_text("")  # there, but empty: nothing to show
    assert await cli("tail", "-c", str(config)) == (0, "", "")


async def test_dead_replay_by_failure_group_at_a_rate(flaky, receiver):
    [first, *_] = await flaky.store.dead_list("crm", 0, 10)
    group = group_id("crm", signature(first.last_error))  # as the console shows it
    assert "would replay 2" in await run_ok(flaky, "dead", "replay", "--group", group, "--dry-run")
    assert "replayed 0" in await run_ok(flaky, "dead", "replay", "--group", "0" * 12)
    assert "replayed 2" in await run_ok(flaky, "dead", "replay", "--group", group, "--rate", "0.5")
    # At 0.5/s the second is due 2 s after the first, which the daemon may notice up to a
    # second late (it polls for changes made by commands): both arrive, spread out.
    await wait_for(lambda: len(receiver.hits) == 2, 10, "the replayed group")
    assert receiver.hits[1].at - receiver.hits[0].at >= 1.0
    code, _, err = await cli("dead", "replay", "--rate", "0", "-c", str(flaky.config_path))
    assert (
        code == 1
        and err.strip()
        == "relay: --rate: must be a positive number of events per second (0.001 to 1e6)"
    )
    code, _, err = await cli("dead", "replay", "-c", str(flaky.config_path))
    assert code == 1 and "say what to replay" in err  # as the admin API: everything needs '*'
    code, _, err = await cli("dead", "replay", "--group", "zz", "-c", str(flaky.config_path))
    assert code == 1 and err.strip() == (
        "relay: --group: must be a failure group id (12 hex digits, as listed)"
    )
