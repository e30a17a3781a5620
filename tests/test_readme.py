"""The README's settings section is the tap's own `--about --format=markdown` output."""

from __future__ import annotations

import importlib.util
import json

import yaml

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location(
    "update_readme_settings", ROOT / "scripts" / "update_readme_settings.py"
)
assert spec is not None
assert spec.loader is not None
update_readme_settings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_readme_settings)


def test_readme_settings_equal_the_taps_about_output():
    _head, block, _tail = update_readme_settings.split((ROOT / "README.md").read_text())
    assert block == update_readme_settings.about_markdown(), (
        "README.md's settings block is stale: run "
        ".venv/bin/python scripts/update_readme_settings.py"
    )


def test_update_script_rewrites_only_the_block(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    start, end = update_readme_settings.START, update_readme_settings.END
    readme.write_text(f"# Title\n\nBefore.\n\n{start}\nold text\n{end}\n\nAfter.\n")
    monkeypatch.setattr(update_readme_settings, "README", readme)
    monkeypatch.setattr(update_readme_settings, "about_markdown", lambda: "| new | table |")
    assert update_readme_settings.main(["--check"]) == 1
    assert update_readme_settings.main([]) == 0
    assert readme.read_text() == (
        f"# Title\n\nBefore.\n\n{start}\n| new | table |\n\n{end}\n\nAfter.\n"
    )
    assert update_readme_settings.main(["--check"]) == 0


def test_meltano_yml_declares_every_setting_of_the_tap():
    settings = json.loads(update_readme_settings.about("json"))["settings"]["properties"]
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    (extractor,) = [
        p for p in project["plugins"]["extractors"] if p["name"] == "tap-stripe-connect"
    ]
    declared = {s["name"]: s for s in extractor["settings"]}
    assert set(declared) == set(settings), "meltano.yml and --about list different settings"
    for name, setting in settings.items():
        assert bool(declared[name].get("sensitive")) == bool(setting.get("secret")), name
        if "default" in setting:
            assert declared[name].get("value") == setting["default"], name
