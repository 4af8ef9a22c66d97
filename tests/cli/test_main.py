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


def _every_command() -> list[list[str]]:
    import click

    from obsflow.cli import COMMANDS, obsflow

    found: list[list[str]] = []

    def walk(command: click.Command, words: list[str]) -> None:
        found.append(words)
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                sub = command.get_command(click.Context(command), name)
                assert sub is not None
                walk(sub, [*words, name])

    for name in COMMANDS:
        command = obsflow.get_command(click.Context(obsflow), name)
        assert command is not None
        walk(command, [name])
    return found


@pytest.mark.parametrize("words", _every_command(), ids=" ".join)
def test_every_command_s_help_shows_an_example(words, capsys) -> None:
    # Found by the documentation audit: `obsflow config --help` had none, though the README says every command has
    assert main([*words, "--help"]) == 0
    assert "Example" in capsys.readouterr().out
