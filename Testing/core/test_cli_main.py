"""The command line entry point: every command is registered; bad input is one line and exit 2."""
import pytest

from vertebra_traversal.cli.main import COMMANDS, build_parser, main


def test_every_command_is_registered_with_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert sorted(subparsers.choices) == sorted(name.replace("_", "-") for name in COMMANDS)  # tune_labels: tune-labels
    for name, sub in subparsers.choices.items():
        assert sub.format_help().strip(), name


def test_input_error_is_one_line_on_stderr_and_exit_code_2(tmp_path, capsys):
    code = main(["evaluate", "--pred", str(tmp_path / "nope"), "--ref", str(tmp_path / "also-nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vertebra-traversal evaluate: error:")


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and "vertebra-traversal" in capsys.readouterr().out
