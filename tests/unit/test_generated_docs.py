"""The generated reference pages are current: rendered again from the code, they match what
is committed. A failure means a config key, CLI flag, event type or route changed without
`python -m relay.docgen` being run (run it and commit the pages)."""

from __future__ import annotations

import argparse

import pytest

from relay import cli
from relay.docgen import PAGES, REFERENCE, main


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_committed_reference_page_is_current(name: str) -> None:
    committed = (REFERENCE / name).read_text()
    assert committed == PAGES[name](), (
        f"docs/reference/{name} is stale: run `python -m relay.docgen` and commit it"
    )


def test_docgen_check_reports_current_pages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert capsys.readouterr().out == "all generated pages are current\n"


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {where}", a) for where, a in _all_actions(sub))
        elif not isinstance(action, argparse._HelpAction):
            yield "", action


def test_every_command_line_option_says_what_it_does() -> None:
    # The CLI reference shows each option's help; an option without one would be a blank row.
    bare = [f"{where}{a.dest}" for where, a in _all_actions(cli._parser()) if not a.help]
    assert not bare, f"options without help: {bare}"
