"""Text that came from a peer, made safe to print: escaped and bounded.

Refuse reasons, Error messages and RAM block names are chosen by whoever
is on the other end.  Printed raw, a 60 KB reason floods the terminal and
escape sequences reach it; ``printable`` keeps printable characters,
writes every other one as a Python escape (``\\x1b``), and cuts the text at
``limit`` characters, saying how much was left out.
"""

from __future__ import annotations

DEFAULT_LIMIT = 300


def printable(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` with control and other non-printable characters escaped, at most ``limit`` long."""
    if not isinstance(text, str):
        text = repr(text)
    cut = text[:limit]
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in cut)
    if len(text) > limit:
        safe += f"... ({len(text) - limit} more characters)"
    return safe
