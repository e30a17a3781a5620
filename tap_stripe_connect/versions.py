"""The Stripe API versions the tap has schemas for, and where each version's schemas are.

Objects change shape between versions (fields move, are renamed or removed), so each
version has its own generated schemas (`scripts/generate_schemas.py`); the tap reads the
folder of the `api_version` setting, and its records are converted and checked against it.
"""

from __future__ import annotations

import json
import typing as t
from importlib import resources as importlib_resources

# Existing warehouses were built with 2024-06-20: it stays the default.
DEFAULT_API_VERSION = "2024-06-20"
API_VERSIONS: tuple[str, ...] = (DEFAULT_API_VERSION, "2026-10-28.endive")


def schema_folder(api_version: str) -> str:
    """The folder, inside the package, of a version's schemas (the default's is `schemas`,
    where it always was)."""
    if api_version not in API_VERSIONS:
        raise ValueError(unsupported(api_version))
    return "schemas" if api_version == DEFAULT_API_VERSION else f"schemas/{api_version}"


def unsupported(api_version: object) -> str:
    return (
        f"setting 'api_version' must be {' or '.join(repr(v) for v in API_VERSIONS)}, "
        f"not {str(api_version)[:40]!r}"
    )


def load_schema(name: str, api_version: str = DEFAULT_API_VERSION) -> dict:
    """A stream's schema in one API version."""
    folder = importlib_resources.files("tap_stripe_connect").joinpath(schema_folder(api_version))
    return t.cast("dict", json.loads(folder.joinpath(f"{name}.json").read_text()))
