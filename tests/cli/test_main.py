"""``obsflow`` itself (cli/__init__.py): how Click's own errors and help reach the user."""

from __future__ import annotations

import pytest

from obsflow.cli import main


@pytest.mark.parametrize("args", [[], ["config"]])
def test_a_group_without_its_command_shows_its_help_as_click_lays_it_out(args, capsys) -> None:
    # Found by review: once Click's errors became one line, `obsflow` alone printed its whole help
    # squashed into one "obsflow: error: Usage: ... Commands: demo Run a whole ..." line.
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Usage: obsflow {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND [ARGS]...\n")
    assert "\nCommands:\n" in err and "obsflow: error" not in err


def test_a_bad_option_is_still_one_line(capsys) -> None:
    assert main(["config", "check", "--no-such-option"]) == 2
    assert capsys.readouterr().err == (
        "obsflow: error: No such option '--no-such-option' (see 'obsflow config check --help')\n"
    )
