"""The commands the README shows, so tests run exactly what a reader copies.

`commands()` is every line of the README's ```bash blocks (comments dropped).
`command(start)` is the one README command beginning with `start`: a test that runs it
fails once the README changes the command, and `tests/test_readme.py` checks every
README command is run by some test (`RUN_BY`).
"""

from __future__ import annotations

import re

from tests.conftest import ROOT

README = ROOT / "README.md"
_BLOCK = re.compile(r"^\s*```bash\n(.*?)^\s*```", re.S | re.M)


def strip_comment(line: str) -> str:
    """`cmd   # why` -> `cmd` (a `#` after two spaces starts the README's comments)."""
    return re.split(r"\s{2,}#\s", line.strip(), maxsplit=1)[0].strip()


def commands() -> list[str]:
    found = []
    for block in _BLOCK.findall(README.read_text()):
        for line in block.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                found.append(strip_comment(line))
    return found


def command(start: str) -> str:
    """The README command that begins with `start` (exactly one)."""
    matches = [c for c in commands() if c.startswith(start)]
    assert len(matches) == 1, f"README commands starting with {start!r}: {matches}"
    return matches[0]
