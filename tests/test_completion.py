"""Shell completion scripts: generated from the parser, valid, and they complete."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from engine.cli import build_parser
from engine.commands.completion import bash_script, command_tree, zsh_script

TREE = command_tree(build_parser())


def _every_option(command):
    yield from (flag for o in command.options for flag in o.flags)
    for sub in command.subcommands.values():
        yield from _every_option(sub)


@pytest.mark.parametrize("make", [bash_script, zsh_script], ids=["bash", "zsh"])
def test_every_command_and_option_is_in_the_script(make):
    script = make(TREE)
    for name in ["run", "send", "recv", "inspect", "doctor", "stress", "report", "config", "show",
                 "completion"]:
        assert name in script
    for flag in set(_every_option(TREE)):
        assert flag in script, flag


def _bash_complete(*words: str) -> list[str]:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    line = " ".join(f"'{w}'" for w in words)
    probe = (f"{bash_script(TREE)}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n"
             "_multifd_engine; printf '%s\\n' \"${COMPREPLY[@]}\"")
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_completes_commands_options_and_choices():
    assert _bash_complete("multifd-engine", "r") == ["run", "recv", "relay", "report"]
    assert _bash_complete("multifd-engine", "inspect", "--method", "") == ["none", "zlib", "zstd", "qpl"]
    assert _bash_complete("multifd-engine", "config", "") == ["-h", "--help", "show"]
    assert "--set" in _bash_complete("multifd-engine", "config", "show", "--")
    assert _bash_complete("multifd-engine", "completion", "") == ["-h", "--help", "bash", "zsh"]
    assert _bash_complete("multifd-engine", "send", "--to", "") == []       # an address, not a file


def test_zsh_script_parses():
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (the script is still checked for its contents)")
    result = subprocess.run(["zsh", "-n"], input=zsh_script(TREE), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr


def test_completion_command_prints_the_script(capsys):
    from engine.cli import main
    from engine.exit_codes import EXIT_OK

    assert main(["completion", "zsh"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("#compdef multifd-engine")
