"""The commands the README and the docs pages show, so tests run exactly what a reader copies.

`commands()` is every line of the ```bash blocks of README.md and of every page under docs/
(comments dropped). `command(start)` is the one command beginning with `start` (the same
text on several pages counts once): a test that runs it fails once a page changes the
command, and `tests/test_readme.py` checks that every command is run by the test `RUN_BY`
names, and that this test does call `command()` with a start of that command.

A command a test cannot run (it needs a live Stripe key, or a machine of its own) goes in a
```sh block instead, and the page says why beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
_BLOCK = re.compile(r"^\s*```bash\n(.*?)^\s*```", re.S | re.M)


def pages() -> list[Path]:
    """README.md and every page of the documentation site."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def strip_comment(line: str) -> str:
    """`cmd   # why` -> `cmd` (a `#` after two spaces starts the pages' comments)."""
    return re.split(r"\s{2,}#\s", line.strip(), maxsplit=1)[0].strip()


def page_commands(path: Path) -> list[str]:
    found = []
    for block in _BLOCK.findall(path.read_text()):
        for line in block.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                found.append(strip_comment(line))
    return found


def commands() -> list[str]:
    """Every command of every page, each text once, in page order."""
    return list(dict.fromkeys(c for path in pages() for c in page_commands(path)))


def command(start: str) -> str:
    """The command that begins with `start` (exactly one)."""
    matches = [c for c in commands() if c.startswith(start)]
    assert len(matches) == 1, f"commands of README.md and docs/ starting with {start!r}: {matches}"
    return matches[0]
