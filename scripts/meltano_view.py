"""What the quick start shows of a `meltano run` log (stdin): progress, problems, summary.

Meltano logs every line of the tap and the loader (CREATE TABLE statements, one line per
table loaded, ...); the quick start keeps all of it in its log file and shows only:
the tap's progress lines and its summary table, and any warning or error (with the lines
that follow it, such as a traceback).
"""

from __future__ import annotations

import re
import sys
import typing as t

# `2026-01-01T00:00:00.000000Z [info     ] tap-stripe-connect Progress charges: ...`
LINE = re.compile(r"^\S+Z \[(?P<level>[a-z]+)\s*\] (?P<source>\S+)\s+(?P<message>.*)$")
TAP = "tap-stripe-connect"
# Meltano's own notes on what the quick start asked for (--force), not problems.
EXPECTED = ("Force option is enabled",)


def view(lines: t.Iterable[str], out: t.TextIO) -> None:
    showing = False  # continuation lines (a table, a traceback) follow their first line
    for raw in lines:
        line = raw.rstrip("\n")
        match = LINE.match(line)
        if match is None:
            if showing:
                out.write(f"    {line}\n")
            continue
        level, source, message = match["level"], match["source"], match["message"]
        if level in ("warning", "error", "critical") and not message.startswith(EXPECTED):
            out.write(f"    {level.upper()} {source}: {message}\n")
            showing = True
        elif source == TAP and message.startswith(("Progress ", "Sync finished")):
            out.write(f"    {message}\n")
            showing = message.startswith("Sync finished")
        else:
            showing = False
        out.flush()


if __name__ == "__main__":
    view(sys.stdin, sys.stdout)
