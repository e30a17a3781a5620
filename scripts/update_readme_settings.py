"""Rewrite the settings block of docs/settings.md (the site's "Settings reference") from
`tap-stripe-connect --about --format=markdown`.

    .venv/bin/python scripts/update_readme_settings.py          # rewrite the block
    .venv/bin/python scripts/update_readme_settings.py --check  # exit 1 when it is stale

The block lies between the marker comments `<!-- settings:start -->` and
`<!-- settings:end -->`; tests/test_readme.py fails while it differs from the tap's output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The page that holds the block (the name is older than the page).
README = ROOT / "docs" / "settings.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def about_markdown() -> str:
    """The tap's own settings documentation, as `--about --format=markdown` prints it."""
    return about("markdown")


def about(fmt: str) -> str:
    """What `tap-stripe-connect --about --format=<fmt>` prints."""
    proc = subprocess.run(
        [sys.executable, "-m", "tap_stripe_connect", "--about", f"--format={fmt}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return proc.stdout.strip()


def split(text: str) -> tuple[str, str, str]:
    """README text before the block (with the start marker), the block, and the rest."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{README.name} needs exactly one {START} ... {END} block")
    head, rest = text.split(START)
    block, tail = rest.split(END)
    return head + START, block.strip(), END + tail


def main(argv: list[str]) -> int:
    text = README.read_text()
    head, block, tail = split(text)
    current = about_markdown()
    if "--check" in argv:
        if block != current:
            print(f"{README.name}'s settings block is stale: run scripts/update_readme_settings.py")
            return 1
        return 0
    README.write_text(f"{head}\n{current}\n\n{tail}")
    print(f"{README.name} settings block " + ("unchanged" if block == current else "updated"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
