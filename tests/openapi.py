"""Stripe's OpenAPI description (2024-06-20) as vendored in `vendor/stripe-openapi/`.

The tests read the same file, through the same loader, as `scripts/generate_schemas.py`,
so a fresh clone needs nothing outside the repository.
"""

from __future__ import annotations

import functools
import importlib.util
import typing as t
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "generate_schemas.py"


def load_script(path: Path) -> t.Any:
    """A script of `scripts/` as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = load_script(SCRIPT)
SPEC = generator.DEFAULT_SPEC


@functools.cache
def spec() -> dict[str, t.Any]:
    """The parsed description (read once per test session: ~6 MB of JSON)."""
    return t.cast("dict[str, t.Any]", generator.load_spec(SPEC))
