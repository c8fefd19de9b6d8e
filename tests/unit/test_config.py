"""Configuration: durations, secrets, embedded defaults, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, HttpDestination, PullDestination, RetryPolicy, load
from relay.config.reader import parse_duration
from relay.domain.events import EVENT_TYPES

LOOP = '[server]\nlisten = "127.0.0.1:8080"\n'
HOOK = '[destinations.crm]\ntype = "http"\nurl = "https://crm.example.com/hooks/email"\n'
ALL_TO_CRM = '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str):
    return load(write(tmp_path, text))


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    for problem in info.value.problems:  # every problem names the file first, one a line
        assert problem.startswith(f"{path}: ") and "\n" not in problem, problem
    return message


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (30, 30.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_durations_are_numbers_of_seconds_or_unit_strings(written, seconds):
    assert parse_duration(written) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["30x", "five minutes", "", "-5s", "5 m s", True, -1, None])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_durations_in_a_destination_become_seconds(tmp_path):
    cfg = load_text(
        tmp_path,
        LOOP
        + HOOK
        + 'timeout = "250ms"\ndelay = "30s"\n'
        + 'retry = { initial = "5m", max = "2h", max_age = "1d", multiplier = 3, max_attempts = 4 }\n'
        + ALL_TO_CRM,
    )
    crm = cfg.destinations["crm"]
    assert isinstance(crm, HttpDestination)
    assert crm.timeout_s == 0.25
    assert crm.delay_s == 30.0
    assert crm.retry == RetryPolicy(
        initial_s=300.0, max_s=7200.0, multiplier=3.0, max_attempts=4, max_age_s=86400.0
    )


def test_a_bad_duration_names_the_dotted_key(tmp_path):
    message = error_for(tmp_path, LOOP + HOOK + 'retry = { initial = "soon" }\n' + ALL_TO_CRM)
    assert "destinations.crm.retry.initial: must be a duration" in message
    assert "'soon'" in message


# --- http destination defaults ------------------------------------------------------------


def test_http_destination_defaults_match_the_spec(tmp_path):
    crm = load_text(tmp_path, LOOP + HOOK + ALL_TO_CRM).destinations["crm"]
    assert isinstance(crm, HttpDestination)
    assert (crm.method, crm.format, crm.timeout_s, crm.delay_s) == ("POST", "json", 10.0, 0.0)
    assert (crm.batch_size, crm.concurrency, crm.signing_key) == (1, 8, None)
    assert crm.retry == RetryPolicy(5.0, 3600.0, 2.0, 15, 3 * 86400.0)


# --- secrets -----------------------------------------------------------------------------


def test_env_and_file_secrets_are_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAY_TEST_INGEST", "tok-from-env")
    monkeypatch.setenv("RELAY_TEST_CRM_KEY", "key-from-env")
    secret_file = tmp_path / "tracking.secret"
    secret_file.write_text("tracking-from-file\n")  # the trailing newline is not part of it
    cfg = load_text(
        tmp_path,
        LOOP
        + '[ingest]\ntokens = ["env:RELAY_TEST_INGEST", "literal-token"]\n'
        + f'[tracking]\nsecrets = ["file:{secret_file}"]\n'
        + HOOK
        + 'headers = { "X-Api-Key" = "env:RELAY_TEST_CRM_KEY" }\n'
        + ALL_TO_CRM,
    )
    assert cfg.ingest.tokens == ("tok-from-env", "literal-token")
    assert cfg.tracking.secrets == ("tracking-from-file",)
    assert cfg.destinations["crm"].headers == (("X-Api-Key", "key-from-env"),)


def test_a_missing_env_secret_names_the_key_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("RELAY_TEST_UNSET", raising=False)
    message = error_for(tmp_path, LOOP + '[ingest]\ntokens = ["env:RELAY_TEST_UNSET"]\n')
    assert "ingest.tokens[0]:" in message
    assert "RELAY_TEST_UNSET" in message


def test_a_missing_secret_file_names_the_key_and_path(tmp_path):
    missing = tmp_path / "nope.secret"
    message = error_for(tmp_path, LOOP + f'[tracking]\nsecrets = ["file:{missing}"]\n')
    assert "tracking.secrets[0]:" in message
    assert str(missing) in message


def test_an_empty_secret_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAY_TEST_EMPTY", "")
    message = error_for(tmp_path, LOOP + '[ingest]\ntokens = ["env:RELAY_TEST_EMPTY"]\n')
    assert "ingest.tokens[0]: must not be empty" in message


def test_whsec_signing_secret_is_base64_decoded(tmp_path):
    cfg = load_text(
        tmp_path, LOOP + HOOK + 'signing_secret = "whsec_c2VjcmV0LWtleQ=="\n' + ALL_TO_CRM
    )
    assert cfg.destinations["crm"].signing_key == b"secret-key"


def test_a_whsec_secret_that_is_not_base64_is_refused(tmp_path):
    message = error_for(
        tmp_path, LOOP + HOOK + 'signing_secret = "whsec_not*base64"\n' + ALL_TO_CRM
    )
    assert "destinations.crm.signing_secret:" in message


# --- embedded defaults -------------------------------------------------------------------


def test_no_config_file_gives_the_embedded_defaults():
    cfg = load(None)
    assert cfg.server.loopback
    assert cfg.server.host == "127.0.0.1"
    assert cfg.storage.path == Path("relay.db")
    assert cfg.ingest.tokens == ()  # no auth: loopback only
    assert list(cfg.destinations) == ["default"]
    assert isinstance(cfg.destinations["default"], PullDestination)
    assert len(cfg.routes) == 1
    assert cfg.routes[0].event_types == EVENT_TYPES
    assert cfg.routes[0].destinations == ("default",)
    assert cfg.routes[0].match == ()


def test_an_empty_file_is_valid_and_loopback(tmp_path):
    cfg = load_text(tmp_path, "")
    assert cfg.server.loopback
    assert cfg.storage.path == tmp_path / "relay.db"  # relative to the config file


# --- errors name the file and dotted key -------------------------------------------------


def test_a_non_http_url_is_refused_with_the_dotted_key(tmp_path):
    message = error_for(
        tmp_path,
        LOOP + '[destinations.crm]\ntype = "http"\nurl = "ftp://crm.example.com/x"\n' + ALL_TO_CRM,
    )
    assert "destinations.crm.url: must be an http(s) URL" in message


def test_a_missing_url_is_required(tmp_path):
    message = error_for(tmp_path, LOOP + '[destinations.crm]\ntype = "http"\n' + ALL_TO_CRM)
    assert "destinations.crm.url: required" in message


def test_a_misspelt_key_is_refused_not_ignored(tmp_path):
    message = error_for(tmp_path, LOOP + HOOK + 'tiemout = "5s"\n' + ALL_TO_CRM)
    assert "destinations.crm.tiemout: unknown key" in message
    assert "timeout" in message  # the legal keys are listed


def test_a_misspelt_top_level_section_is_refused(tmp_path):
    message = error_for(tmp_path, LOOP + '[storgae]\npath = "x.db"\n')
    assert "storgae: unknown key" in message


def test_a_misspelt_key_in_a_route_is_refused(tmp_path):
    message = error_for(
        tmp_path, LOOP + HOOK + '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\nmacth = {}\n'
    )
    assert "routes[0].macth: unknown key" in message


def test_a_route_to_an_unknown_destination_is_refused(tmp_path):
    message = error_for(
        tmp_path, LOOP + HOOK + '[[routes]]\nevents = ["*"]\ndestinations = ["crn"]\n'
    )
    assert "routes[0].destinations: unknown destination 'crn'" in message
    assert "crm" in message  # the known ones are listed


def test_a_route_with_an_unknown_event_is_refused(tmp_path):
    message = error_for(
        tmp_path, LOOP + HOOK + '[[routes]]\nevents = ["CLICKS"]\ndestinations = ["crm"]\n'
    )
    assert "routes[0].events: 'CLICKS' is not an event type or trigger" in message


def test_a_bad_destination_type_lists_the_legal_values(tmp_path):
    message = error_for(tmp_path, LOOP + '[destinations.crm]\ntype = "carrier-pigeon"\n')
    assert "destinations.crm.type: 'carrier-pigeon' is not one of" in message
    for legal in ("http", "pull"):
        assert legal in message


def test_a_missing_destination_type_is_required(tmp_path):
    message = error_for(tmp_path, LOOP + '[destinations.crm]\nurl = "https://x.example/"\n')
    assert "destinations.crm.type: required" in message


def test_a_bad_method_lists_the_legal_values(tmp_path):
    message = error_for(tmp_path, LOOP + HOOK + 'method = "PUT"\n' + ALL_TO_CRM)
    assert "destinations.crm.method: 'PUT' is not one of POST, GET" in message


def test_method_and_format_are_case_insensitive(tmp_path):
    crm = load_text(
        tmp_path, LOOP + HOOK + 'method = "get"\nformat = "FORM"\n' + ALL_TO_CRM
    ).destinations["crm"]
    assert (crm.method, crm.format) == ("GET", "form")


def test_a_wrong_value_type_names_the_key(tmp_path):
    message = error_for(tmp_path, LOOP + HOOK + 'concurrency = "eight"\n' + ALL_TO_CRM)
    assert "destinations.crm.concurrency: must be an integer" in message


def test_an_out_of_range_value_names_the_key_and_bounds(tmp_path):
    message = error_for(tmp_path, LOOP + HOOK + "concurrency = 0\n" + ALL_TO_CRM)
    assert "destinations.crm.concurrency: must be between 1 and" in message


def test_non_loopback_listen_without_ingest_tokens_is_refused(tmp_path):
    message = error_for(tmp_path, '[server]\nlisten = "0.0.0.0:8080"\n')
    assert "ingest.tokens: required when server.listen is not loopback" in message


def test_non_loopback_listen_with_ingest_tokens_is_accepted(tmp_path):
    cfg = load_text(
        tmp_path,
        '[server]\nlisten = "0.0.0.0:8080"\npublic_url = "https://relay.example.com"\n'
        '[ingest]\ntokens = ["s3cret"]\n'
        '[destinations.feed]\ntype = "pull"\ntokens = ["pull"]\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n',
    )
    assert not cfg.server.loopback
    assert cfg.server.port == 8080
    assert cfg.ingest.tokens == ("s3cret",)


@pytest.mark.parametrize("listen", ["localhost:9000", "[::1]:9000", "127.0.0.2:9000"])
def test_loopback_listen_needs_no_tokens(tmp_path, listen):
    cfg = load_text(tmp_path, f'[server]\nlisten = "{listen}"\n')
    assert cfg.server.loopback and cfg.server.port == 9000


def test_a_bad_listen_names_the_key(tmp_path):
    message = error_for(tmp_path, '[server]\nlisten = "8080"\n')
    assert "server.listen: must be host:port" in message


@pytest.mark.parametrize(
    "extra", ['method = "GET"\nbatch_size = 10\n', 'format = "form"\nbatch_size = 10\n']
)
def test_batching_needs_post_json(tmp_path, extra):
    message = error_for(tmp_path, LOOP + HOOK + extra + ALL_TO_CRM)
    assert "destinations.crm.batch_size:" in message
    assert "POST" in message


def test_invalid_toml_is_refused_with_the_file_name(tmp_path):
    message = error_for(tmp_path, '[server\nlisten = "127.0.0.1:8080"\n')
    assert "not valid TOML" in message


def test_an_unreadable_file_is_refused_with_its_name(tmp_path):
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load(missing)
    assert str(missing) in str(info.value)


def test_the_error_names_the_file_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, LOOP + '[destinations.crm]\ntype = "http"\nurl = "crm"\n' + ALL_TO_CRM)
    with pytest.raises(ConfigError) as info:
        load(Path("relay.toml"))
    assert str(info.value).startswith("relay.toml: destinations.crm.url: must be an http(s) URL")


# --- routes ------------------------------------------------------------------------------


def test_routes_accept_triggers_and_event_types_in_any_case(tmp_path):
    cfg = load_text(
        tmp_path,
        LOOP
        + HOOK
        + '[[routes]]\nevents = ["click", "Engine_Open", "SPAMCOMPLAINT", "optout", "BOUNCE"]\n'
        + 'destinations = ["crm"]\n',
    )
    assert cfg.routes[0].event_types == {
        "engine_click",
        "engine_open",
        "scomp",
        "engine_unsub",
        "bounce",
    }


def test_star_routes_every_event_type(tmp_path):
    cfg = load_text(tmp_path, LOOP + HOOK + ALL_TO_CRM)
    assert cfg.routes[0].event_types == EVENT_TYPES
    assert len(EVENT_TYPES) == 13


def test_route_match_filters_are_kept(tmp_path):
    cfg = load_text(
        tmp_path,
        LOOP
        + HOOK
        + '[[routes]]\nevents = ["CLICK"]\ndestinations = ["crm"]\n'
        + 'match = { mail_class = ["transactional"], listid = ["t99", "t100"] }\n',
    )
    assert dict(cfg.routes[0].match) == {
        "mail_class": {"transactional"},
        "listid": {"t99", "t100"},
    }


def test_a_route_without_events_is_refused(tmp_path):
    message = error_for(tmp_path, LOOP + HOOK + '[[routes]]\ndestinations = ["crm"]\n')
    assert "routes[0].events: required" in message


def test_a_config_whose_routes_reach_no_destination_is_refused(tmp_path):
    message = error_for(tmp_path, LOOP + HOOK)
    assert "routes: required: without [[routes]] every event would be unrouted" in message
    assert "routes = []" in message  # says how to mean it


def test_routes_written_empty_on_purpose_route_nothing(tmp_path):
    cfg = load_text(tmp_path, "routes = []\n" + LOOP + HOOK)
    assert cfg.routes == ()
    assert list(cfg.destinations) == ["crm"]


def test_a_config_of_only_a_listen_address_keeps_the_embedded_destination_and_route(tmp_path):
    cfg = load_text(tmp_path, '[server]\nlisten = "127.0.0.1:18081"\n')
    assert cfg.server.port == 18081
    assert cfg.destinations == {"default": PullDestination("default")}
    assert cfg.routes == load(None).routes


def test_the_embedded_destination_is_never_open_beyond_loopback(tmp_path):
    message = error_for(tmp_path, '[server]\nlisten = "0.0.0.0:8080"\n[ingest]\ntokens = ["t"]\n')
    assert (
        "destinations: required: the embedded pull destination `default` has no tokens" in message
    )


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path):
    text = (
        '[server]\nlisten = "nowhere"\n'
        '[storage]\nretention = "a week"\n'
        + HOOK
        + 'tiemout = "5s"\nconcurrency = 0\n'
        + '[destinations.feed]\ntype = "pull"\nlease = -1\n'
        + '[[routes]]\nevents = ["BOUNCE", "bogus"]\ndestinations = ["crm", "nope"]\n'
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    where = [p.removeprefix(f"{path}: ").split(":")[0] for p in info.value.problems]
    assert where == [
        "server.listen",
        "storage.retention",
        "destinations.crm.concurrency",
        "destinations.crm.tiemout",
        "destinations.feed.lease",
        "routes[0].events",
        "routes[0].destinations",
    ]


def test_command_line_overrides_listen_and_db(tmp_path):
    cfg = load(write(tmp_path, LOOP + HOOK + ALL_TO_CRM), "127.0.0.1:9999", "other.db")
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 9999)
    assert cfg.storage.path == Path("other.db").absolute()
    assert cfg.server.public_url == "http://127.0.0.1:9999"
    defaults = load(None, "127.0.0.1:9998")
    assert defaults.server.port == 9998 and list(defaults.destinations) == ["default"]


def test_config_objects_are_frozen(tmp_path):
    cfg = load_text(tmp_path, LOOP + HOOK + ALL_TO_CRM)
    with pytest.raises(AttributeError):
        cfg.server.port = 1  # type: ignore[misc]


def test_reject_takes_http_error_statuses_only(tmp_path):
    """`reject` lists statuses that are permanent; anything but a 4xx/5xx is a problem naming it."""
    from relay.config import ConfigError, load

    base = '[destinations.crm]\ntype = "http"\nurl = "http://127.0.0.1:9/h"\n'
    routes = '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
    path = tmp_path / "relay.toml"
    path.write_text(base + routes)
    assert load(path).destinations["crm"].reject == (410,)
    path.write_text(base + "reject = [404, 410]\n" + routes)
    assert load(path).destinations["crm"].reject == (404, 410)
    path.write_text(base + "reject = [200]\n" + routes)
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert "destinations.crm.reject[0]: must be integers between 400 and 599, got 200" in str(
        exc.value
    )
