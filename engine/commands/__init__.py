"""The subcommands of ``multifd-engine``, one module each.

A command module has ``add_parser(subparsers)``, which adds its parser and
sets ``handler``, and the handler ``main(args) -> int`` (an exit status).
"""

from engine.commands import (completion, config_cmd, doctor_cmd, inspect_cmd, recv_cmd, relay_cmd,
                             report_cmd, run_cmd, send_cmd, stress_cmd, sweep_cmd)

COMMANDS = [run_cmd, send_cmd, recv_cmd, relay_cmd, inspect_cmd, doctor_cmd, stress_cmd, sweep_cmd,
            report_cmd, config_cmd, completion]
