"""The command line's exit status, one number per kind of outcome.

Its own module so that ``engine.cli`` and the subcommands both import it
without importing each other.  docs/cli.md lists the same numbers.
"""

EXIT_OK = 0
EXIT_VERIFY = 1         # verification failed: pages differ
EXIT_USAGE = 2          # bad usage or config (also: `report --plot` without matplotlib)
EXIT_INPUT = 3          # bad input: a malformed channel stream, a report file that is not ours
EXIT_ENGINE = 4         # the engine failed: a worker died or reported an error
EXIT_PEER = 5           # the peer or the connection failed (TCP migration)
EXIT_INTERRUPTED = 130  # Ctrl-C
