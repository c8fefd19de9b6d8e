"""What a user of the wheel sees of relay's identity: one version, reported the same everywhere."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import relay

ROOT = Path(__file__).resolve().parents[2]


def test_relay_version_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "relay", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout == f"relay {relay.__version__}\n"


def test_the_wheel_takes_its_version_from_the_package_and_a_free_name() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]  # no second copy to forget
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "relay.__version__"}
    # "relay" on the public index is an unrelated project; the command keeps the short name.
    assert project["project"]["name"] == "relay-events"
    assert project["project"]["scripts"] == {"relay": "relay.cli:main"}


def test_the_openapi_document_names_the_version_that_serves_it() -> None:
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    assert spec["info"]["version"] == relay.__version__


def test_the_changelog_has_an_entry_for_the_current_version() -> None:
    assert f"## {relay.__version__} " in (ROOT / "CHANGELOG.md").read_text()
