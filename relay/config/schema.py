"""Every configuration key relay accepts: its type, default, meaning and an example.

The parser reads keys one by one (`reader.Table`); this table is what a person reads. They are
kept honest by a test that parses a config using every section and destination type while
recording each key, default and list of legal values the parser asks for, and fails when one is
missing here or differs — so a new key cannot ship undocumented. The reference page
`docs/reference/configuration.md` is rendered from this table (`python -m relay.docgen`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Key:
    """One key. `default` is the parser's default as TOML text (None: no default); `computed`
    replaces it in the docs when the default depends on other keys."""

    name: str
    type: str
    default: str | None
    doc: str
    example: str
    choices: tuple[str, ...] = ()
    computed: str = ""


@dataclass(frozen=True, slots=True)
class Section:
    """A TOML table: `[server]`, or one destination type under `[destinations.NAME]`."""

    path: str  # the dotted table path, `destinations.<name>` for destinations
    title: str
    doc: str
    keys: tuple[Key, ...]
    destination_type: str = ""  # for destination sections: the `type` they apply to


DESTINATION_TYPES = ("http", "email", "ftp", "sftp", "pull")


def type_key(example: str) -> Key:
    """`type`, the key every destination section starts with (the parser reads the same tuple)."""
    return Key(
        "type", "string", None, "the destination type", example, DESTINATION_TYPES, "required"
    )


DURATION = "duration"
SECRET = "secret"
RETRY = (
    Key(
        "retry",
        "table",
        "{}",
        "the retry policy: the keys below",
        '{ initial = "10s", max_attempts = 20 }',
    ),
    Key("retry.initial", DURATION, '"5s"', "wait before the second attempt", '"10s"'),
    Key(
        "retry.max",
        DURATION,
        '"1h"',
        "the longest wait between attempts; not less than `initial`",
        '"30m"',
    ),
    Key(
        "retry.multiplier",
        "number ≥ 1",
        "2.0",
        "each wait is the previous one times this (up to 20 % earlier, jitter)",
        "1.5",
    ),
    Key(
        "retry.max_attempts",
        "integer ≥ 1",
        "15",
        "after this many attempts the delivery is dead",
        "20",
    ),
    Key(
        "retry.max_age",
        DURATION,
        '"3d"',
        "a delivery whose event is older than this is dead",
        '"1d"',
    ),
)
TIMING = (
    Key("delay", DURATION, '"0s"', "hold each event this long before its first attempt", '"30s"'),
)
UPLOADS = (
    Key(
        "format",
        "string",
        '"jsonl"',
        '`jsonl`: one event object a line; `csv`: a header row, then one row per event (RFC 4180), columns in first-seen order, `headers.<Name>` for each header; `form`: one URL-encoded line per event, the body an http destination sends with `format = "form"`; `pure360`: the vendor\'s own form fields',
        '"csv"',
        ("jsonl", "csv", "form", "pure360"),
    ),
    Key(
        "csv_raw",
        "boolean",
        "false",
        "`csv` only: `false` writes a cell a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) with a `'` in front, as OWASP advises against CSV injection (plain numbers such as `-5` are kept); `true` writes every cell as the event had it, for programs",
        "true",
    ),
    Key(
        "upload_every",
        DURATION,
        '"1h"',
        'the period (at least 1 s), aligned to the Unix epoch in UTC: `"1d"` uploads just after midnight UTC',
        '"1d"',
    ),
    Key("host", "string", None, "the server (required)", '"files.example.com"'),
    Key(
        "directory",
        "string",
        '"."',
        "where files go, relative to the login directory; it must exist",
        '"incoming/relay"',
    ),
    Key(
        "filename",
        "string",
        None,
        "the file name template: `{date}` (`2026-11-25`), `{time}` (`134500`), `{seq}` (1, 2, …; format specs work: `{seq:03d}`); `{date}` and `{time}` are the start (UTC) of the period of the file's oldest event",
        '"events-{date}.csv"',
        computed='`"events-{date}-{time}-{seq}.<ext>"`, `<ext>` being `jsonl`, `csv` or `txt` by format',
    ),
    Key(
        "max_events_per_file",
        "integer 1–1,000,000",
        "100000",
        "more events due in one round: several files",
        "50000",
    ),
    Key("timeout", DURATION, '"60s"', "for one whole upload, from connect to rename", '"2m"'),
)

SECTIONS: tuple[Section, ...] = (
    Section(
        "server",
        "[server]",
        "Where relay listens and how it is reached.",
        (
            Key(
                "listen",
                "string",
                '"127.0.0.1:8080"',
                "`host:port` (`[v6]:port` for IPv6); port 0 picks a free port. Anything but loopback requires `ingest.tokens`",
                '"0.0.0.0:8080"',
            ),
            Key(
                "public_url",
                "string",
                None,
                "the base of every tracking URL relay makes: how recipients reach relay",
                '"https://relay.example.com"',
                computed="`http://<listen>`",
            ),
            Key(
                "trusted_proxies",
                "list of strings",
                "[]",
                "addresses or networks of your own reverse proxies; only from them is `X-Forwarded-For` believed (its right-most address that is not itself a trusted proxy)",
                '["127.0.0.1/32", "10.0.0.0/8"]',
            ),
            Key(
                "allowed_hosts",
                "list of strings",
                None,
                '`Host` names (no port: any port matches) the console and admin API answer, and, on a loopback listener, the routes that need no token; any other host gets 421 (a DNS-rebinding page). `["*"]`: any host. See [security](../explanation/security.md)',
                '["relay.internal", "localhost"]',
                computed="the listen address, `localhost`, `127.0.0.1`, `[::1]`",
            ),
            Key(
                "public_hosts",
                "list of strings",
                None,
                "further `Host` names the tracking routes (pixel, click, unsubscribe, signup) answer: the names recipients reach relay by, behind a proxy or DNS name",
                '["t.example.com"]',
                computed="the host of `public_url`",
            ),
            Key(
                "head_timeout",
                DURATION,
                '"10s"',
                "a request head must be whole this long after the connection opens or the request's first byte; else 408 and the socket closes (slow-loris)",
                '"5s"',
            ),
            Key(
                "body_timeout",
                DURATION,
                '"60s"',
                "a request body must be whole this long after its head; else 408 and the socket closes",
                '"30s"',
            ),
            Key(
                "idle_timeout",
                DURATION,
                '"75s"',
                "an idle keep-alive connection closes after this",
                '"30s"',
            ),
            Key(
                "max_connections",
                "integer 1–1,000,000",
                "1000",
                "open connections served; past it the oldest that has sent nothing is closed, and when none is silent new ones get 503 (`/healthz` and `/readyz` still answer), with a warning in the log",
                "4000",
            ),
        ),
    ),
    Section(
        "storage",
        "[storage]",
        "The queue: an SQLite file, or a PostgreSQL database shared by several nodes.",
        (
            Key(
                "backend",
                "string",
                '"sqlite"',
                "`sqlite` (one node) or `postgres` (several nodes, see [Scale out on PostgreSQL](../how-to/postgresql.md))",
                '"postgres"',
                ("sqlite", "postgres"),
            ),
            Key(
                "path",
                "string",
                '"relay.db"',
                "the SQLite file (relative to the config file); the generated tracking secret and, with PostgreSQL, the tracking spool are kept beside it",
                '"/var/lib/relay/relay.db"',
            ),
            Key(
                "dsn",
                SECRET,
                None,
                'the PostgreSQL connection string (required with `backend = "postgres"`); unknown query parameters become server settings',
                '"env:RELAY_PG_DSN"',
            ),
            Key(
                "pool_size",
                "integer ≥ 1",
                "8",
                "PostgreSQL connections per node (plus one for LISTEN)",
                "16",
            ),
            Key(
                "retention",
                DURATION,
                '"7d"',
                "delivered and dead deliveries, and events with none left, are purged after this",
                '"30d"',
            ),
        ),
    ),
    Section(
        "ingest",
        "[ingest]",
        "The ingest API: `POST /v1/events`, `/v1/links`, `/v1/rewrite`.",
        (
            Key(
                "tokens",
                "list of secrets",
                "[]",
                "bearer tokens; required unless `server.listen` is loopback",
                '["env:RELAY_INGEST_TOKEN"]',
            ),
            Key(
                "max_body_bytes",
                "integer ≥ 1024",
                "16777216",
                "the largest request body (16 MiB); over it: 413",
                "33554432",
            ),
            Key(
                "max_events",
                "integer 1–100,000",
                "10000",
                "the most events in one request; over it: 413",
                "1000",
            ),
            Key(
                "max_queued",
                "integer ≥ 1",
                "200000",
                "events waiting for the writer beyond which `/v1/events` answers 503 with"
                " `Retry-After: 1` (the writer is behind or storage stalls)",
                "500000",
            ),
        ),
    ),
    Section(
        "tracking",
        "[tracking]",
        "Tracking links and the events they record. See [tracking URLs and fields](tracking.md).",
        (
            Key(
                "secrets",
                "list of secrets",
                "[]",
                "HMAC keys: links are signed with the first, any is accepted (rotate by putting a new one first). Empty: one is generated on first start and kept in `<storage.path>.tracking-secret`",
                '["env:RELAY_TRACKING_SECRET"]',
            ),
            Key(
                "ip",
                "string",
                '"full"',
                "how much of the recipient's address `engine_ip` keeps: `full`, `truncated` (IPv4 /24, IPv6 /48) or `none`",
                '"truncated"',
                ("full", "truncated", "none"),
            ),
            Key(
                "unsubscribe_on_get",
                "boolean",
                "false",
                "record the unsubscribe on the link's GET, as older systems did; link scanners then unsubscribe people who never asked",
                "true",
            ),
            Key(
                "bots",
                "string",
                '"flag"',
                "machine opens and clicks: `flag` records them with `is_bot: true`, `drop` does not record them",
                '"drop"',
                ("flag", "drop"),
            ),
            Key(
                "bot_memory",
                DURATION,
                '"10m"',
                "how long an address that fetched the honeypot link or sent a HEAD stays marked as a scanner",
                '"30m"',
            ),
        ),
    ),
    Section(
        "console",
        "[console]",
        "The operator console (`/console/`) and the admin API (`/v1/admin/`).",
        (
            Key(
                "tokens",
                "list of secrets",
                "[]",
                "console tokens (Bearer, or the password of HTTP Basic). Empty: the console answers on a loopback listener only",
                '["env:RELAY_CONSOLE_TOKEN"]',
            ),
            Key(
                "read_only",
                "boolean",
                "false",
                "hide every form and refuse every action with 403",
                "true",
            ),
            Key(
                "show_emails",
                "boolean",
                "false",
                "show addresses in full instead of masked (`j***@example.com`)",
                "true",
            ),
            Key(
                "unsub_deadline",
                DURATION,
                '"24h"',
                "flag unsubscribes and complaints still undelivered after this (mailbox providers require unsubscribes honoured within 48 h)",
                '"12h"',
            ),
        ),
    ),
    Section(
        "log",
        "[log]",
        "The dispatch log: one JSON line per delivery attempt ([format](dispatch-log.md)).",
        (
            Key(
                "dispatch",
                "string",
                '"dispatch.log"',
                'its file (relative to the config file), reopened on SIGHUP for logrotate; `"-"` for stdout',
                '"/var/log/relay/dispatch.log"',
            ),
        ),
    ),
    Section(
        "destinations.<name>",
        '[destinations.NAME] type = "http"',
        "A webhook: each event (or a batch of them) sent as an HTTP request. A `2xx` is success; `Retry-After` on 429/503 is honoured.",
        (
            type_key('"http"'),
            Key(
                "url",
                "string",
                None,
                "the receiver's http(s) URL (required)",
                '"https://crm.example.com/hooks/email"',
            ),
            Key(
                "method",
                "string",
                '"POST"',
                "`POST`, or `GET` to send the fields as a query string",
                '"GET"',
                ("POST", "GET"),
            ),
            Key(
                "format",
                "string",
                '"json"',
                "`json`: the bare event object (an array when `batch_size` > 1); `form`: the fields URL-encoded, `headers.<Name>` for each header; `pure360`: the vendor's own form fields",
                '"form"',
                ("json", "form", "pure360"),
            ),
            Key(
                "headers",
                "table of secrets",
                "{}",
                "extra request headers; values may be secrets",
                '{ "X-Api-Key" = "env:CRM_KEY" }',
            ),
            Key(
                "signing_secret",
                SECRET,
                None,
                "sign each request with [Standard Webhooks](../how-to/verify-signatures.md) headers; `whsec_<base64>` or any string",
                '"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"',
            ),
            Key("timeout", DURATION, '"10s"', "for one whole request", '"5s"'),
            *TIMING,
            Key(
                "batch_size",
                "integer 1–1000",
                "1",
                "> 1 sends a JSON array of up to this many events per request (needs POST and json)",
                "100",
            ),
            Key("concurrency", "integer 1–1000", "8", "requests in flight at once", "16"),
            Key(
                "source_address", "string", None, "the local address to send from", '"203.0.113.5"'
            ),
            *RETRY,
            Key(
                "circuit",
                "table",
                "{}",
                "the circuit breaker: the keys below ([how it works](../explanation/delivery.md#circuit-breaking))",
                "{ failures = 5 }",
            ),
            Key(
                "circuit.failures",
                "integer ≥ 0",
                "10",
                "consecutive failed sends that open the circuit; 0 turns it off",
                "5",
            ),
            Key(
                "circuit.cooldown",
                DURATION,
                '"30s"',
                "wait before the first probe; doubled after each failed probe",
                '"1m"',
            ),
            Key(
                "circuit.max_cooldown",
                DURATION,
                '"10m"',
                "the longest wait between probes; not less than `cooldown`",
                '"30m"',
            ),
            Key(
                "reject",
                "list of integers 400–599",
                "[410]",
                "statuses that are permanent: the delivery is dead at once with the response as "
                "its reason, never retried; `[]` retries every failure",
                "[404, 410]",
            ),
        ),
        "http",
    ),
    Section(
        "destinations.<name>",
        '[destinations.NAME] type = "pull"',
        "The pull API: a client leases batches with `GET /v1/pull/NAME` and acknowledges them.",
        (
            type_key('"pull"'),
            Key(
                "tokens",
                "list of secrets",
                "[]",
                "the client's bearer tokens; required unless `server.listen` is loopback",
                '["env:WAREHOUSE_TOKEN"]',
            ),
            Key(
                "lease",
                DURATION,
                '"5m"',
                "a batch not acknowledged within this goes back to the queue",
                '"15m"',
            ),
            Key(
                "max_batch", "integer 1–10,000", "10000", "the most events one pull returns", "1000"
            ),
            Key(
                "session_idle",
                DURATION,
                '"20m"',
                "a SOAP pull session (`/soap/pull`, see [Migrate from Pure360](../how-to/migrate-from-pure360.md)) ends after this long unused",
                '"1h"',
            ),
            *TIMING,
        ),
        "pull",
    ),
    Section(
        "destinations.<name>",
        '[destinations.NAME] type = "email"',
        "Events by email: a digest a period, the events attached as JSON lines. See [Send events by email, FTP or SFTP](../how-to/email-ftp-sftp.md).",
        (
            type_key('"email"'),
            Key("host", "string", None, "the SMTP server (required)", '"smtp.example.com"'),
            Key(
                "port",
                "integer 1–65535",
                None,
                "the SMTP port",
                "2525",
                computed="465 with `tls`, 587 with `starttls`, else 25",
            ),
            Key(
                "tls",
                "boolean",
                "false",
                "implicit TLS from the first byte (SMTPS); excludes `starttls`",
                "true",
            ),
            Key(
                "starttls",
                "boolean",
                "false",
                "upgrade with STARTTLS; a server without it is a failure",
                "true",
            ),
            Key("username", "string", None, "SMTP AUTH user; needs `password`", '"relay"'),
            Key("password", SECRET, None, "SMTP AUTH password", '"env:SMTP_PASSWORD"'),
            Key(
                "ca_file",
                "string",
                None,
                "a PEM file of CAs to trust instead of the system's (relative to the config file)",
                '"ca.pem"',
            ),
            Key(
                "from",
                "string",
                None,
                "the envelope and `From:` address (required)",
                '"relay@example.com"',
            ),
            Key(
                "to",
                "list of strings",
                "[]",
                "the recipients (required)",
                '["crm-inbox@example.com"]',
            ),
            Key(
                "subject",
                "string",
                '"[relay] {count} {event_type} events for {destination}"',
                "the subject template; `{event_type}` is `mixed` when the events differ",
                '"{count} events from relay"',
            ),
            Key(
                "digest",
                DURATION,
                '"1h"',
                'the period, aligned to the epoch in UTC; `"0s"` sends one message per event as soon as it is due',
                '"15m"',
            ),
            Key(
                "max_events_per_message",
                "integer 1–100,000",
                "1000",
                "a bigger digest is split into several messages",
                "5000",
            ),
            Key(
                "concurrency",
                "integer 1–100",
                "4",
                'with `digest = "0s"`: messages in flight at once',
                "8",
            ),
            Key(
                "timeout", DURATION, '"30s"', "for one whole message, from connect to QUIT", '"1m"'
            ),
            Key(
                "reject_5xx",
                "boolean",
                "true",
                "an SMTP 5xx reply is permanent: the events are dead at once with the reply as "
                "the reason; `false` retries it like a 4xx",
                "false",
            ),
            *TIMING,
            *RETRY,
        ),
        "email",
    ),
    Section(
        "destinations.<name>",
        '[destinations.NAME] type = "ftp"',
        "A log file a period on an FTP or FTPS server, uploaded under a temporary name and renamed.",
        (
            type_key('"ftp"'),
            Key("port", "integer 1–65535", "21", "", "2121"),
            Key("username", "string", '"anonymous"', "", '"relay"'),
            Key("password", SECRET, '"anon@"', "", '"env:FTP_PASSWORD"'),
            Key(
                "tls",
                "boolean",
                "false",
                "explicit FTPS: `AUTH TLS` on the plain port, then `PBSZ 0` / `PROT P` so the data channel is encrypted too",
                "true",
            ),
            Key(
                "ca_file",
                "string",
                None,
                "a PEM file of CAs to trust instead of the system's",
                '"ca.pem"',
            ),
            Key(
                "passive",
                "boolean",
                "true",
                "passive mode is the only mode (active FTP does not cross NAT); `false` is an error",
                "true",
            ),
            *UPLOADS,
            *TIMING,
            *RETRY,
        ),
        "ftp",
    ),
    Section(
        "destinations.<name>",
        '[destinations.NAME] type = "sftp"',
        "A log file a period on an SSH server, uploaded under a temporary name and renamed. Host keys are never accepted blindly.",
        (
            type_key('"sftp"'),
            Key("port", "integer 1–65535", "22", "", "2222"),
            Key("username", "string", None, "the SSH user (required)", '"relay"'),
            Key(
                "password",
                SECRET,
                None,
                "password login; `password` or `private_key` (or both) is required",
                '"env:SFTP_PASSWORD"',
            ),
            Key(
                "private_key",
                "string",
                None,
                "an OpenSSH private key file for key login",
                '"sftp_ed25519"',
            ),
            Key(
                "passphrase",
                SECRET,
                None,
                "for an encrypted `private_key`",
                '"env:SFTP_KEY_PASSPHRASE"',
            ),
            Key(
                "host_key",
                "string",
                None,
                "pin the server's public key (the line from its `ssh_host_*_key.pub`); excludes `known_hosts`",
                '"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB…"',
            ),
            Key(
                "known_hosts",
                "string",
                None,
                "an OpenSSH known_hosts file",
                '"known_hosts"',
                computed="`~/.ssh/known_hosts`",
            ),
            *UPLOADS,
            *TIMING,
            *RETRY,
        ),
        "sftp",
    ),
    Section(
        "routes[]",
        "[[routes]]",
        "Which events go to which destinations. An event goes to every destination of every route it matches; routes are checked against the destinations at load.",
        (
            Key(
                "events",
                "list of strings",
                "[]",
                'event types or triggers, any case, or `"*"` for all (required)',
                '["CLICK", "engine_open"]',
            ),
            Key("destinations", "list of strings", "[]", "destination names (required)", '["crm"]'),
            Key(
                "match",
                "table",
                "{}",
                "optional filters: the keys below",
                '{ mail_class = ["transactional"] }',
            ),
            Key(
                "match.mail_class",
                "list of strings",
                "[]",
                "only events whose `mail_class` is one of these",
                '["transactional"]',
            ),
            Key(
                "match.listid",
                "list of strings",
                "[]",
                "only events whose `listid` is one of these",
                '["7", "12"]',
            ),
        ),
    ),
)


def documented() -> dict[tuple[str, str], Key]:
    """(section path or destination type, key name) → Key, for the completeness test."""
    return {(s.destination_type or s.path, k.name): k for s in SECTIONS for k in s.keys}


def render_markdown() -> str:
    """The configuration reference page."""
    out = [
        "<!-- Generated by `python -m relay.docgen` from relay's config schema: edit that, not this page. -->\n\n",
        "# Configuration\n\n",
        _INTRO,
    ]
    for section in SECTIONS:
        out.append(f"## `{section.title}`\n\n{section.doc}\n\n")
        out.append("| key | type | default | example | meaning |\n|---|---|---|---|---|\n")
        for key in section.keys:
            default = key.computed or (f"`{key.default}`" if key.default is not None else "—")
            choices = (
                f" One of {', '.join(f'`{c}`' for c in key.choices)}."
                if key.choices and key.name != "type"
                else ""
            )
            doc = (key.doc[:1].upper() + key.doc[1:] + "." if key.doc else "") + choices
            cells = [f"`{key.name}`", key.type, default, f"`{key.example}`", doc]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
        out.append("\n")
    return "".join(out).rstrip() + "\n"


_INTRO = """\
relay reads one TOML file at start and again on SIGHUP. It is found at `-c PATH`, else
`$RELAY_CONFIG`, else `./relay.toml`, else `/etc/relay/relay.toml`; with none of them relay
runs on its **embedded defaults**: it listens on `127.0.0.1:8080`, keeps its queue in
`relay.db`, needs no token on loopback, and routes every event to one pull destination named
`default`. A file that leaves out both `[destinations]` and `[[routes]]` keeps that `default`
destination and its route, so `[server]` alone only moves the port. A file with destinations
but no `[[routes]]` is refused (every event would be stored and delivered nowhere) unless it
says `routes = []` on purpose.

`relay check-config` validates a file and prints the destinations and routes it would run;
it and `relay serve` report every problem at once, one line each.
Every error names the file and the dotted key
(`relay.toml: destinations.crm.url: must be an http(s) URL, got 'ftp://x'`). Unknown keys are
errors, so a typo never silently falls back to a default.

- **Durations** are seconds (`30`, `0.5`) or strings: `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`.
- **Secrets** can be written `"env:NAME"` (an environment variable) or `"file:/path"` (a
  file's content, trimmed), so the config file itself holds none.
- **Paths** are relative to the config file.
- **Reload.** SIGHUP (`systemctl reload relay`) re-reads the file: routes apply to new events,
  new destinations start, changed ones restart, and a removed destination's backlog stays in
  the database (it is delivered if the destination comes back). A broken new config is
  logged and the running one kept. `[server]` and `[storage]` changes need a restart.

A small but complete file:

```toml
[server]
listen = "127.0.0.1:8080"

[destinations.crm]
type = "http"
url = "https://crm.example.com/hooks/email"
signing_secret = "env:CRM_SIGNING_SECRET"

[[routes]]
events = ["*"]
destinations = ["crm"]
```

`config.example.toml` in the repository shows every section with comments. The tables below
list every key relay accepts.

"""
