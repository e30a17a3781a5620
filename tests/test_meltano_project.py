"""Adding the tap to someone else's Meltano project, as the README and Getting started say,
and Connect there.

A new project (`meltano init`) in a temporary folder adds the plugin from
`tap-stripe-connect.yml` (pip_url from `$TAP_STRIPE_CONNECT_PIP_URL`: this checkout) and
the loader from `loaders/target-jsonl.yml`, syncs the emulator into target-jsonl with an
API key, then connects an account with
`meltano invoke tap-stripe-connect:connect`, runs the Meltano commands `connect` printed,
and syncs the connected account. Every README command of those sections is run as written,
placeholders (`rk_live_...`, `/path/to/...`) replaced by the emulator's values.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from tests import readme
from tests.conftest import ROOT
from tests.emulator import Emulator
from tests.emulator.connect import ConnectPlatform
from tests.test_pipelines import clean_env, meltano  # noqa: F401 (the session fixture)

TIMEOUT = 900


class Project:
    """A Meltano project in a folder of its own; commands run in it through bash."""

    def __init__(self, folder: Path, meltano_bin: Path) -> None:
        self.folder = folder
        self.env = {
            **clean_env(),
            "PATH": f"{meltano_bin.parent}{os.pathsep}{os.environ['PATH']}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        }

    def sh(self, command: str, **env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            command, shell=True, cwd=self.folder, env={**self.env, **env},
            capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
            check=False,
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return proc

    def records(self, stream: str) -> list[dict]:
        path = self.folder / "output" / f"{stream}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


def placeholders(command: str, **values: str) -> str:
    for placeholder, value in values.items():
        command = command.replace(placeholder, value)
    return command


def browse(url: str) -> None:
    """A browser on the (instant) consent page: follow the redirect back to `connect`."""
    consent = requests.get(url, allow_redirects=False, timeout=10)
    assert consent.status_code == 302, consent.text
    page = requests.get(consent.headers["Location"], timeout=60)
    assert "Connection successful" in page.text, page.text


def connect_in_background(command: str, cwd: Path, env: dict[str, str]):
    proc = subprocess.Popen(
        command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "/oauth/authorize?" in line:
            browse(line.strip())
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            return line + out
    raise AssertionError(proc.stderr.read() if proc.stderr else "no authorise URL printed")


@pytest.fixture
def project(meltano, tmp_path) -> Project:  # noqa: F811
    subprocess.run(
        [str(meltano), "init", "shop-analytics", "--no_usage_stats"], cwd=tmp_path,
        env={**clean_env(), "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"},
        capture_output=True, text=True, check=True, timeout=300,
    )
    # A new project has no loader: the recipe adds one (`meltano run` fails without it).
    return Project(tmp_path / "shop-analytics", meltano)


def test_a_new_meltano_project_adds_the_plugin_and_syncs_then_connects(project, tmp_path):
    checkout = {"/path/to/tap-stripe-connect": str(ROOT)}
    # README: "Adding the tap to your own Meltano project".
    project.sh(placeholders(readme.command('echo "TAP_STRIPE_CONNECT_PIP_URL='), **checkout))
    project.sh(placeholders(readme.command("meltano add --plugin-type extractor"), **checkout))
    project.sh(placeholders(readme.command("meltano add --plugin-type loader target-jsonl"),
                            **checkout))
    definition = yaml.safe_load((project.folder / "meltano.yml").read_text())
    (tap,) = definition["plugins"]["extractors"]
    assert tap["pip_url"] == "${TAP_STRIPE_CONNECT_PIP_URL}"
    assert "connect" in tap["commands"]
    project.sh(readme.command("meltano select tap-stripe-connect '*' '*'"))
    project.sh(readme.command("meltano select tap-stripe-connect --exclude payment_methods"))
    definition = yaml.safe_load((project.folder / "meltano.yml").read_text())
    assert definition["plugins"]["extractors"][0]["select"] == ["*.*", "!payment_methods.*"]

    with Emulator(objects=20, seed=71) as emu:
        project.sh(placeholders(
            readme.command("meltano config set tap-stripe-connect api_key rk_live_"),
            **{"rk_live_...": emu.api_key},
        ))
        # Getting started: "To try the project on the emulator first" (its port chosen here).
        for start in ("api_url http://127.0.0.1:12111", "api_key sk_test_emulator"):
            line = readme.command(f"meltano config set tap-stripe-connect {start}")
            project.sh(placeholders(line, **{"http://127.0.0.1:12111": emu.url,
                                             "sk_test_emulator": emu.api_key}))
        project.sh(readme.command("meltano config set tap-stripe-connect stream_maps"))
        project.sh(readme.command("meltano run tap-stripe-connect target-jsonl"))
        charges = project.records("charges")
        assert {c["id"] for c in charges} == {o["id"] for o in emu.objects("charges")}
        assert all(c["amount_major"] == c["amount"] / 100 for c in charges)
        # The default selection: payment_methods is opt-in.
        assert not (project.folder / "output" / "payment_methods.jsonl").exists()
        assert (project.folder / "output" / "invoice_line_items.jsonl").exists()
    for name in ("api_key", "api_url", "stream_maps"):
        project.sh(f"meltano config unset tap-stripe-connect {name}")
    for path in (project.folder / "output").glob("*.jsonl"):
        path.unlink()

    with ConnectPlatform(accounts=2, objects=10) as platform:
        values = {
            "ca_...": platform.client_id,
            "sk_live_...": platform.platform_key,
        }
        emulated = {
            "TAP_STRIPE_CONNECT_OAUTH_URL": platform.url,
            "TAP_STRIPE_CONNECT_API_URL": platform.url,
        }
        # README "Connect with Stripe": the three commands, in the project folder.
        (project.folder / ".venv").symlink_to(ROOT / ".venv")
        script = "\n".join([
            placeholders(readme.command("export TAP_STRIPE_CONNECT_CLIENT_ID="), **values),
            placeholders(readme.command("export TAP_STRIPE_CONNECT_CLIENT_SECRET="), **values),
            readme.command(".venv/bin/tap-stripe-connect connect --config ENV")
            + " --no-browser --port 0",
        ])
        printed = connect_in_background(script, project.folder, {**project.env, **emulated})
        account = platform.account_ids[0]
        assert "Connection successful: Emulated Goods" in printed
        # The commands `connect` printed, then the README's own, in the project.
        next_steps = [
            line.strip() for line in printed.splitlines() if line.strip().startswith("meltano ")
        ]
        assert len(next_steps) == 3, printed
        # `connect` prints the variable the README exports; README lines that still name
        # the older one work too.
        secret = {
            "TAP_STRIPE_CONNECT_CLIENT_SECRET": platform.platform_key,
            "STRIPE_PLATFORM_SECRET_KEY": platform.platform_key,
        }
        for line in next_steps:
            project.sh(line, **secret)
        for start in ("credentials_file", "client_id", "client_secret"):
            line = readme.command(f"meltano config set tap-stripe-connect {start}")
            project.sh(placeholders(line, **values), **secret)
        for name, value in (("oauth_url", platform.url), ("api_url", platform.url)):
            project.sh(f"meltano config set tap-stripe-connect {name} {value}")

        project.sh(readme.command("meltano run tap-stripe-connect target-jsonl"))
        charges = project.records("charges")
        connected = platform.accounts[account].objects("charges")
        assert {c["id"] for c in charges} == {o["id"] for o in connected}
        assert {c["account_id"] for c in charges} == {account}

        # `connect` as the plugin's Meltano command (settings from the project).
        (project.folder / "stripe-credentials.json").unlink()
        invoked = connect_in_background(
            "meltano " + readme.command("meltano invoke tap-stripe-connect:connect")[8:]
            + " --no-browser --port 0",
            project.folder, project.env,
        )
        assert "Connection successful" in invoked
        saved = json.loads((project.folder / "stripe-credentials.json").read_text())
        assert saved["stripe_user_id"] == account
