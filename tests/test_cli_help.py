"""``verity COMMAND --help`` works for every command (issue 11: `verity sft --help` crashed on a '%')."""

import pytest

from verity.cli.main import COMMANDS, main


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"] if command is None else [command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: verity") and (command is None or command in out.splitlines()[0])


def test_help_shows_percent_signs_literally(capsys):
    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    assert "10% of --lr" in " ".join(capsys.readouterr().out.split())
