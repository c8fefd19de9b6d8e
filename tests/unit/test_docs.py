"""The documentation a newcomer reads first: every link resolves, the test command is CI's, and
nothing points outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "examples/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_every_relative_link_in_the_top_level_documents_resolves(name: str) -> None:
    # The docs site checks its own links (mkdocs build --strict); these files are outside it.
    text = (ROOT / name).read_text()
    missing = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = (ROOT / name).parent / target.split("#")[0]
        if not path.exists():
            missing.append(target)
    assert not missing, f"{name} links to files that do not exist: {missing}"


def test_the_readme_stays_short_and_its_test_command_is_the_one_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[ci.index("# The README's test command, exactly:") + 1]
    assert f"```sh\n{command}\n```" in readme


def test_nothing_in_the_repository_points_outside_it() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    # Spelled in pieces so that this file does not match itself.
    outside = re.compile("|".join(["shared" + "/", "SPEC" + " §"]))
    hits = [
        name
        for name in files
        if name
        and (ROOT / name).is_file()
        and outside.search((ROOT / name).read_text(errors="ignore"))
    ]
    assert not hits, f"these files refer to documents outside the repository: {hits}"
