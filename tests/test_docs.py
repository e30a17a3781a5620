"""The documentation site: its generated pages are current, it builds strictly (a broken link
or a page missing from the nav fails), and the README stays a short front door."""

from __future__ import annotations

import importlib.util
import re
import subprocess

import yaml

from tap_stripe_connect.resources import RESOURCES
from tests import readme
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("generate_docs",
                                              ROOT / "scripts" / "generate_docs.py")
assert spec is not None
assert spec.loader is not None
generate_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate_docs)


def test_expected_stripe_data_is_generated_from_the_code():
    page = (ROOT / "docs" / "data.md").read_text()
    assert page == generate_docs.data_page(), (
        "docs/data.md is stale: run .venv/bin/python scripts/generate_docs.py"
    )


def test_expected_stripe_data_has_every_stream_column_version_and_model():
    """Read from the page, checked against the resource table, each version's schema files
    and dbt's schema.yml, not through the generator."""
    page = (ROOT / "docs" / "data.md").read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", page, re.S | re.M))
    for r in RESOURCES:
        section = sections[r.name]
        assert f"`GET {r.path}" in section, r.name
        v1 = yaml.safe_load((ROOT / f"tap_stripe_connect/schemas/{r.name}.json").read_text())
        v2 = yaml.safe_load(
            (ROOT / f"tap_stripe_connect/schemas/2026-10-28.endive/{r.name}.json").read_text())
        rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", section, re.M))
        assert set(rows) == set(v1["properties"]) | set(v2["properties"]), r.name
        for column, versions in rows.items():
            both = column in v1["properties"] and column in v2["properties"]
            assert (versions.strip() == "all") == both, (r.name, column, versions)
        for event in r.delete_events:
            assert f"`{event}`" in section.split("**Deletes:**")[1].split("\n")[0], r.name
    assert "Amount intended to be collected" in sections["charges"], "Stripe's descriptions"
    models = yaml.safe_load((ROOT / "analytics/models/schema.yml").read_text())["models"]
    for model in models:
        assert f"### {model['name']}\n" in page
        for column in model.get("columns", []):
            assert f"| `{column['name']}` |" in page


def test_the_site_builds_strictly():
    """`bash scripts/docs.sh build`: MkDocs (Material) builds every page of the nav and
    fails on a broken link, a missing page, or a page left out of the nav."""
    command = readme.command("bash scripts/docs.sh build")
    run = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True,
                         timeout=600, stdin=subprocess.DEVNULL, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "docs: built into site/" in run.stdout
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = {next(iter(item.values())) for item in nav}
    assert pages == {p.name for p in (ROOT / "docs").glob("*.md")}
    for page in pages:
        assert (ROOT / "site" / ("index.html" if page == "index.md"
                                 else page.removesuffix(".md") + "/index.html")).exists(), page


def test_the_readme_is_a_short_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    first_screen = "\n".join(text.splitlines()[:40])
    assert "bash scripts/quickstart.sh" in first_screen
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link
