"""Write `tap-stripe-connect.yml`, the plugin definition for other Meltano projects.

It is this project's `meltano.yml` entry for the extractor (settings, capabilities,
commands), except `pip_url`: other projects install the tap from
`$TAP_STRIPE_CONNECT_PIP_URL` (a git URL or a path to a checkout), since `-e .` only means
this checkout here. A test keeps the file equal to `meltano.yml`.

    python scripts/update_plugin_definition.py           # rewrite tap-stripe-connect.yml
    python scripts/update_plugin_definition.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFINITION = ROOT / "tap-stripe-connect.yml"
PIP_URL = "${TAP_STRIPE_CONNECT_PIP_URL}"
HEADER = """\
# Meltano plugin definition of tap-stripe-connect, for your own Meltano project:
#   export TAP_STRIPE_CONNECT_PIP_URL=git+https://<git host>/<owner>/tap-stripe-connect.git
#   (or the path of a checkout: TAP_STRIPE_CONNECT_PIP_URL=/path/to/tap-stripe-connect)
#   meltano add extractor tap-stripe-connect --from-ref /path/to/tap-stripe-connect.yml
# Keep TAP_STRIPE_CONNECT_PIP_URL in the project's .env so `meltano install` finds it.
# Generated from meltano.yml by scripts/update_plugin_definition.py: do not edit.
"""


def definition() -> str:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    (extractor,) = [
        p for p in project["plugins"]["extractors"] if p["name"] == "tap-stripe-connect"
    ]
    plugin = {**extractor, "pip_url": PIP_URL}
    return HEADER + yaml.safe_dump(plugin, sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = definition()
    current = DEFINITION.read_text() if DEFINITION.exists() else ""
    if args.check:
        if current != text:
            print(f"{DEFINITION.name} is stale: run python scripts/update_plugin_definition.py")
            return 1
        return 0
    DEFINITION.write_text(text)
    print(f"wrote {DEFINITION.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
