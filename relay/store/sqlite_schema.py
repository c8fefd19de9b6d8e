"""The SQLite schema: migrations applied in order, PRAGMA user_version counts them."""

from __future__ import annotations

import sqlite3

from ..models import State

# Applied in order; PRAGMA user_version counts how many have run.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE events (
        seq         INTEGER PRIMARY KEY,   -- assigned by the writer, in commit order
        id          TEXT NOT NULL UNIQUE,  -- the event id (client's or relay's)
        event_type  TEXT NOT NULL,
        received_at REAL NOT NULL,
        routed      INTEGER NOT NULL,      -- number of destinations; 0 = unrouted
        body        BLOB NOT NULL          -- the event as JSON, never rewritten
    );
    CREATE TABLE deliveries (
        id          INTEGER PRIMARY KEY,
        event_seq   INTEGER NOT NULL,
        destination TEXT NOT NULL,
        state       INTEGER NOT NULL,      -- 0 pending, 1 leased, 2 delivered, 3 dead
        due_at      REAL NOT NULL,         -- pending: next attempt; leased: lease expiry
        attempts    INTEGER NOT NULL,
        lease       INTEGER,               -- fencing token of the current claim
        last_error  TEXT,
        created_at  REAL NOT NULL,         -- when relay received the event
        updated_at  REAL NOT NULL
    );
    -- Claims: the due work of one destination, in due order. Only live rows are indexed.
    CREATE INDEX deliveries_due ON deliveries (destination, due_at) WHERE state < {State.DELIVERED:d};
    CREATE INDEX deliveries_event ON deliveries (event_seq);
    CREATE INDEX deliveries_lease ON deliveries (lease) WHERE state = {State.LEASED:d};
    CREATE INDEX deliveries_dead ON deliveries (destination, id) WHERE state = {State.DEAD:d};
    CREATE INDEX deliveries_done ON deliveries (updated_at) WHERE state >= {State.DELIVERED:d};
    CREATE TABLE paused (
        destination TEXT PRIMARY KEY,
        until       REAL                   -- resume by itself then; NULL = until resumed
    );
    """,
    """
    -- `first` for tracking events: one row per (event_type, email, sendid) ever seen.
    CREATE TABLE firsts (
        event_type TEXT NOT NULL,
        email      TEXT NOT NULL,
        sendid     TEXT NOT NULL,
        seen_at    REAL NOT NULL,
        PRIMARY KEY (event_type, email, sendid)
    ) WITHOUT ROWID;
    CREATE INDEX firsts_seen ON firsts (seen_at);
    """,
    """
    -- `relay flush DEST`: the CLI asks, the daemon's upkeep takes the request within a second.
    CREATE TABLE flushes (
        destination  TEXT PRIMARY KEY,
        requested_at REAL NOT NULL
    );
    """,
    f"""
    -- Counts kept by triggers in the writing transaction, so `stats` and the console read a
    -- few rows instead of counting a million. destination '' holds the event totals:
    -- state 0 = events stored, 1 = of those, unrouted.
    CREATE TABLE counters (
        destination TEXT NOT NULL,
        state       INTEGER NOT NULL,
        n           INTEGER NOT NULL,
        PRIMARY KEY (destination, state)
    ) WITHOUT ROWID;
    INSERT INTO counters SELECT destination, state, COUNT(*) FROM deliveries GROUP BY 1, 2;
    INSERT INTO counters SELECT '', 0, COUNT(*) FROM events;
    INSERT INTO counters SELECT '', 1, COUNT(*) FROM events WHERE routed = 0;
    CREATE TRIGGER events_counted AFTER INSERT ON events BEGIN
        UPDATE counters SET n = n + 1 WHERE destination = '' AND state = 0;
        UPDATE counters SET n = n + 1 WHERE destination = '' AND state = 1 AND new.routed = 0;
    END;
    CREATE TRIGGER events_uncounted AFTER DELETE ON events BEGIN
        UPDATE counters SET n = n - 1 WHERE destination = '' AND state = 0;
        UPDATE counters SET n = n - 1 WHERE destination = '' AND state = 1 AND old.routed = 0;
    END;
    CREATE TRIGGER deliveries_counted AFTER INSERT ON deliveries BEGIN
        INSERT INTO counters (destination, state, n) VALUES (new.destination, new.state, 1)
        ON CONFLICT (destination, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER deliveries_moved AFTER UPDATE OF state ON deliveries
    WHEN old.state <> new.state BEGIN
        UPDATE counters SET n = n - 1 WHERE destination = old.destination AND state = old.state;
        INSERT INTO counters (destination, state, n) VALUES (new.destination, new.state, 1)
        ON CONFLICT (destination, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER deliveries_gone AFTER DELETE ON deliveries BEGIN
        UPDATE counters SET n = n - 1 WHERE destination = old.destination AND state = old.state;
        DELETE FROM attempts WHERE delivery_id = old.id;
    END;
    -- The oldest live delivery of a destination, without a scan (stats, console).
    CREATE INDEX deliveries_age ON deliveries (destination, created_at) WHERE state < {State.DELIVERED:d};
    -- Each delivery's last attempts (ATTEMPTS_KEPT): `relay show` and the console.
    CREATE TABLE attempts (
        delivery_id INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,      -- 1 for the first try (again 1 after a replay)
        destination TEXT NOT NULL,
        event_type  TEXT NOT NULL,
        ts          REAL NOT NULL,
        outcome     TEXT NOT NULL,         -- delivered | retry | dead
        status      INTEGER,
        ms          REAL NOT NULL,
        error       TEXT,
        response    TEXT,
        PRIMARY KEY (delivery_id, ts)
    ) WITHOUT ROWID;
    CREATE INDEX attempts_recent ON attempts (destination, ts);
    -- Operator actions from the console and the admin API.
    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY,
        ts     REAL NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        count  INTEGER,
        detail TEXT NOT NULL
    );
    """,
    f"""
    -- Dead letters of every destination by id (the console's dead page, `relay dead list`).
    CREATE INDEX deliveries_dead_all ON deliveries (id) WHERE state = {State.DEAD:d};
    """,
    """
    -- Inserts are counted by the writer, a few statements a group (`_count_inserted`):
    -- a trigger a row cost a third of ingest's SQLite time.
    DROP TRIGGER events_counted;
    DROP TRIGGER deliveries_counted;
    """,
    """
    -- Pull acks, one row per destination and minute that each ack batch adds to (one
    -- upsert per batch, not a row per event): a pull destination's live picture, rebuilt
    -- at start as a push destination's is from its attempts.
    CREATE TABLE acks (
        destination TEXT NOT NULL,
        minute      INTEGER NOT NULL,      -- Unix minute
        n           INTEGER NOT NULL,      -- events acked in it
        last_ts     REAL NOT NULL,         -- the minute's newest batch: when, how many, id
        last_n      INTEGER NOT NULL,
        last_lease  INTEGER NOT NULL,
        PRIMARY KEY (destination, minute)
    ) WITHOUT ROWID;
    """,
)


def statements(script: str) -> list[str]:
    """Split a migration into statements; a trigger's body stays whole."""
    out, current = [], ""
    for line in script.splitlines():
        line = line.split("--", 1)[0]  # our SQL holds no `--` inside strings
        current += line + "\n"
        if sqlite3.complete_statement(current):
            out.append(current.strip().rstrip(";"))
            current = ""
    if current.strip():
        out.append(current.strip())
    return out
