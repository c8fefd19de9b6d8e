"""`relay check-config`: validate without starting anything; exit 0, 1 or 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GOOD = """\
[server]
listen = "127.0.0.1:8089"

[storage]
path = "relay.db"

[destinations.crm]
type = "http"
url = "https://crm.example.com/hooks/email"
delay = "30s"

[destinations.warehouse]
type = "pull"

[[routes]]
events = ["CLICK", "engine_open"]
destinations = ["crm"]
match = { mail_class = ["transactional"] }

[[routes]]
events = ["*"]
destinations = ["warehouse"]
"""


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_good_config_exits_0_and_prints_destinations_and_routes(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(GOOD)
    result = run("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "crm" in out and "https://crm.example.com/hooks/email" in out
    assert "warehouse" in out and "pull" in out
    route_lines = [line for line in out.splitlines() if "->" in line]
    assert len(route_lines) == 2
    assert "engine_click" in route_lines[0] and "engine_open" in route_lines[0]
    assert "crm" in route_lines[0] and "transactional" in route_lines[0]
    assert route_lines[1].split() == ["*", "->", "warehouse"]
    assert not (tmp_path / "relay.db").exists()  # validates without starting anything


def test_c_is_accepted_before_or_after_the_subcommand(tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text(GOOD)
    after = run("check-config", "--config", str(config), cwd=tmp_path)
    before = run("-c", str(config), "check-config", cwd=tmp_path)
    assert after.returncode == before.returncode == 0
    assert after.stdout == before.stdout
    assert "warehouse" in after.stdout


def test_a_bad_config_exits_1_with_one_line_naming_the_key(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(GOOD.replace("https://crm.example.com/hooks/email", "crm.example.com"))
    result = run("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0]
    assert "destinations.crm.url: must be an http(s) URL" in lines[0]


def test_a_typo_exits_1_naming_the_dotted_key(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(GOOD.replace('delay = "30s"', 'dealy = "30s"'))
    result = run("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "destinations.crm.dealy: unknown key" in result.stderr


def test_invalid_toml_exits_1_in_one_line(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text("[server\nlisten = 1\n")
    result = run("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not valid TOML" in result.stderr and str(config) in result.stderr


def test_an_unreadable_config_exits_1(tmp_path):
    result = run("check-config", "-c", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert result.returncode == 1
    assert "missing.toml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_flag_exits_2(tmp_path):
    result = run("check-config", "--frobnicate", cwd=tmp_path)
    assert result.returncode == 2
    assert "--frobnicate" in result.stderr


def test_an_unknown_command_exits_2(tmp_path):
    result = run("check-everything", cwd=tmp_path)
    assert result.returncode == 2


def test_relay_config_env_is_used_when_no_c(tmp_path):
    config = tmp_path / "from-env.toml"
    config.write_text(GOOD)
    result = run("check-config", cwd=tmp_path, env={"RELAY_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert "from-env.toml" in result.stdout
    assert "warehouse" in result.stdout


def test_relay_toml_in_the_working_directory_is_found(tmp_path):
    (tmp_path / "relay.toml").write_text(GOOD)
    result = run("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warehouse" in result.stdout


def test_the_embedded_defaults_check_out(tmp_path):
    assert not Path("/etc/relay/relay.toml").exists()  # else the search path finds it first
    result = run("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "default" in result.stdout and "pull" in result.stdout
    assert "127.0.0.1" in result.stdout


def test_every_problem_is_reported_in_one_run_each_with_its_key_path(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(
        GOOD.replace("https://crm.example.com/hooks/email", "crm.example.com")
        .replace('delay = "30s"', 'dealy = "30s"')
        .replace('events = ["*"]', 'events = ["BOUNCE", "BOUNCED"]')
    )
    result = run("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"relay: {config}: destinations.crm.url: must be an http(s) URL, got 'crm.example.com'",
        f"relay: {config}: destinations.crm.dealy: unknown key (known: batch_size, circuit,"
        " concurrency, delay, format, headers, method, reject, retry, signing_secret, source_address,"
        " timeout, type, url)",
        f"relay: {config}: routes[1].events: 'BOUNCED' is not an event type or trigger",
        "relay: 3 problems in the config",
    ]


def test_a_config_that_only_changes_the_port_keeps_the_embedded_destination(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:18081"\n')
    result = run("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "listen: 127.0.0.1:18081" in result.stdout
    assert "  default          pull  pull API" in result.stdout.splitlines()
    assert "  * -> default" in result.stdout.splitlines()


def test_a_config_with_destinations_but_no_routes_is_refused(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(GOOD.split("[[routes]]")[0])
    result = run("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert (
        f"{config}: routes: required: without [[routes]] every event would be unrouted"
        in result.stderr
    )
    on_purpose = tmp_path / "quiet.toml"
    on_purpose.write_text("routes = []\n" + GOOD.split("[[routes]]")[0])
    result = run("check-config", "-c", str(on_purpose), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "routes: none (routes = []: every event is unrouted)"


def test_the_example_config_names_every_missing_secret_in_one_run_then_passes(tmp_path):
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    secrets = {
        "RELAY_INGEST_TOKEN": "ingest",
        "RELAY_TRACKING_SECRET": "tracking-secret-tracking-secret",
        "CRM_KEY": "key",
        "CRM_SIGNING_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "WAREHOUSE_TOKEN": "pull",
    }
    environ = {k: v for k, v in os.environ.items() if k not in secrets}
    missing = subprocess.run(
        [sys.executable, "-m", "relay", "check-config", "-c", str(example)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 1
    for name in secrets:
        assert f"environment variable {name} is not set" in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == "relay: 5 problems in the config"
    result = run("check-config", "-c", str(example), cwd=tmp_path, env=secrets)
    assert result.returncode == 0, result.stderr


def test_listen_and_db_on_the_command_line_override_the_config(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(GOOD)
    result = run(
        "check-config",
        "-c",
        str(config),
        "--listen",
        "127.0.0.1:18082",
        "--db",
        "x.db",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"listen: 127.0.0.1:18082  database: {tmp_path / 'x.db'}" in result.stdout
    bad = run("check-config", "-c", str(config), "--listen", "nowhere", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip() == 'relay: --listen: must be host:port, e.g. "127.0.0.1:8080"'
    helped = run("serve", "--help", cwd=tmp_path)
    assert "--listen HOST:PORT" in helped.stdout and "--db PATH" in helped.stdout
