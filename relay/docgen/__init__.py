"""Generate the reference pages that must not drift from the code: `python -m relay.docgen`.

Each page is rendered from the thing it documents — the event vocabulary and
`examples/events.json`, the argparse parser, the config schema, `docs/openapi.yaml` — and
written under `docs/reference/`. A test renders them again and fails when a committed page
differs, so a new CLI flag, config key or route cannot ship undocumented.
`python -m relay.docgen --check` does the same from the command line (exit status 1 if stale).
It needs a checkout (it reads `docs/` and `examples/`) and PyYAML (the test or docs extra).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..config.schema import render_markdown as render_configuration
from .commands import render_cli
from .events import render_events
from .openapi import render_openapi

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"


PAGES: dict[str, Callable[[], str]] = {
    "events.md": render_events,
    "cli.md": render_cli,
    "configuration.md": render_configuration,
    "http-api.md": lambda: render_openapi(ROOT / "docs" / "openapi.yaml"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.docgen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, render in PAGES.items():
        path = REFERENCE / name
        text = render()
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    verb = "stale" if args.check else "written"
    print(f"{verb}: {', '.join(stale)}" if stale else "all generated pages are current")
    return 1 if args.check and stale else 0
