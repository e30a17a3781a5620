"""Write the plugin definitions for other Meltano projects: `tap-stripe-connect.yml` and
`loaders/<loader>.yml`.

`tap-stripe-connect.yml` is this project's `meltano.yml` entry for the extractor (settings,
capabilities, commands), except `pip_url`: other projects install the tap from
`$TAP_STRIPE_CONNECT_PIP_URL` (a git URL, a wheel or a path to a checkout), since `-e .` only
means this checkout here. Each `loaders/<name>.yml` is `meltano.yml`'s entry for that loader,
as it is (`meltano add --plugin-type loader <name> --from-ref loaders/<name>.yml`). A test
keeps the files equal to `meltano.yml`.

    python scripts/update_plugin_definition.py           # rewrite them
    python scripts/update_plugin_definition.py --check   # exit 1 if one is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tap_stripe_connect import __version__

ROOT = Path(__file__).resolve().parents[1]
DEFINITION = ROOT / "tap-stripe-connect.yml"
LOADERS = ROOT / "loaders"
PIP_URL = "${TAP_STRIPE_CONNECT_PIP_URL}"
HEADER = """\
# Meltano plugin definition of tap-stripe-connect, for your own Meltano project:
#   meltano add --plugin-type extractor tap-stripe-connect \\
#     --from-ref /path/to/tap-stripe-connect/tap-stripe-connect.yml
# pip_url is $TAP_STRIPE_CONNECT_PIP_URL, kept in the project's .env so `meltano install` finds
# it. Pin a release by one of (docs/getting-started.md, "Pin a release"):
#   a wheel:  /path/to/dist/tap_stripe_connect-{version}-py3-none-any.whl
#   a tag:    git+https://github.com/tap-stripe-connect/tap-stripe-connect.git@v{version}
#   on PyPI:  tap-stripe-connect=={version}  (once published)
#   a checkout (follows its branch): /path/to/tap-stripe-connect
# Generated from meltano.yml by scripts/update_plugin_definition.py: do not edit.
"""


def definition() -> str:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    (extractor,) = [
        p for p in project["plugins"]["extractors"] if p["name"] == "tap-stripe-connect"
    ]
    plugin = {**extractor, "pip_url": PIP_URL}
    body = yaml.safe_dump(plugin, sort_keys=False, allow_unicode=True, width=100)
    return HEADER.format(version=__version__) + body


LOADER_HEADER = """\
# Meltano plugin definition of the loader {name}, as tap-stripe-connect's meltano.yml has it:
#   meltano add --plugin-type loader {name} \\
#     --from-ref /path/to/tap-stripe-connect/loaders/{name}.yml
# Generated from meltano.yml by scripts/update_plugin_definition.py: do not edit.
"""


def loader_definitions() -> dict[Path, str]:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    return {
        LOADERS / f"{loader['name']}.yml": LOADER_HEADER.format(name=loader["name"])
        + yaml.safe_dump(loader, sort_keys=False, allow_unicode=True, width=100)
        for loader in project["plugins"]["loaders"]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    files = {DEFINITION: definition(), **loader_definitions()}
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    stale += [p for p in LOADERS.glob("*.yml") if p not in files]  # a loader meltano.yml lost
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: "
                  "run python scripts/update_plugin_definition.py")
        return 1 if stale else 0
    LOADERS.mkdir(exist_ok=True)
    for path in stale:
        if path in files:
            path.write_text(files[path])
        else:
            path.unlink()
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
