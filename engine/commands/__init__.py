"""The subcommands of ``multifd-engine``, one module each.

A command module has ``add_parser(subparsers)``, which adds its parser and
sets ``handler``, and the handler ``main(args) -> int`` (an exit status).
"""

from engine.commands import inspect_cmd, run_cmd

COMMANDS = [run_cmd, inspect_cmd]
