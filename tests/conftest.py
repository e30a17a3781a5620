"""Shared test helpers: running the real CLI against the emulator and reading its messages."""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import requests_mock

from tests.emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TapRun:
    """One run of `tap-stripe-connect`: exit code, Singer messages, and stderr."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict] = field(default_factory=list)

    def records(self, stream: str | None = None) -> list[dict]:
        return [
            m["record"]
            for m in self.messages
            if m["type"] == "RECORD" and (stream is None or m["stream"] == stream)
        ]

    def schemas(self) -> dict[str, dict]:
        return {m["stream"]: m["schema"] for m in self.messages if m["type"] == "SCHEMA"}

    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def last_state(self) -> dict | None:
        states = self.states()
        return states[-1] if states else None

    @property
    def error_line(self) -> str:
        lines = [
            ln for ln in self.stderr.splitlines() if ln.startswith("tap-stripe-connect: error:")
        ]
        return lines[-1] if lines else ""


def limit_open_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def run_tap(
    *args: str,
    config: dict | None = None,
    state: dict | None = None,
    catalog: dict | None = None,
    env: dict | None = None,
    tmp_path: Path,
    timeout: float = 300,
    open_files: int | None = None,
    module: str = "tap_stripe_connect",
) -> TapRun:
    """Run the CLI in a subprocess, as Meltano or a shell would (`open_files`: its limit
    of open file descriptors, as `ulimit -n`; `module`: `tests.decisions` to record what
    the run decided)."""
    argv = [sys.executable, "-m", module, *args]
    for flag, content, name in (
        ("--config", config, "config.json"),
        ("--state", state, "state.json"),
        ("--catalog", catalog, "catalog.json"),
    ):
        if content is not None:
            path = tmp_path / name
            path.write_text(json.dumps(content))
            argv += [flag, str(path)]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_STRIPE_CONNECT_")}
    child_env.update(env or {})
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        preexec_fn=None if open_files is None else functools.partial(limit_open_files, open_files),
    )
    record_output(config, env, proc.stdout, proc.stderr)
    messages = []
    for line in proc.stdout.splitlines():
        if line.startswith('{"type"'):
            messages.append(json.loads(line))
    return TapRun(proc.returncode, proc.stdout, proc.stderr, messages)


# -- no secret in any output -------------------------------------------------------------------

#: (secrets configured for a run, everything it wrote) for every run of the session.
CAPTURED: list[tuple[frozenset[str], str]] = []
SECRET_SETTINGS = ("api_key", "client_secret", "refresh_token", "access_token")


def record_output(config: dict | None, env: dict | None, *outputs: str) -> None:
    """Keep a run's stdout (STATE included) and stderr for the `no_secret_leaks` check."""
    secrets = {str((config or {}).get(name) or "") for name in SECRET_SETTINGS}
    secrets |= {
        str(value)
        for name, value in (env or {}).items()
        if name.upper().endswith(tuple(s.upper() for s in SECRET_SETTINGS))
    }
    CAPTURED.append((frozenset(s for s in secrets if len(s) >= 8), "\n".join(outputs)))


class StripeHTTP(requests_mock.Adapter):
    """Scripted answers in place of the network, under every requests session: the tap's
    client sends through its session's adapter, not `Session.send` (which the
    `requests_mock` plugin patches)."""

    def get(self, url: str, response_list: list | None = None, **answer: object) -> object:
        return self.register_uri("GET", url, response_list, **answer)


@pytest.fixture
def stripe_http(monkeypatch: pytest.MonkeyPatch) -> StripeHTTP:
    adapter = StripeHTTP()
    monkeypatch.setattr(requests.Session, "get_adapter", lambda _session, url: adapter)
    return adapter


@pytest.fixture(autouse=True)
def no_secret_leaks():
    """After each test: no secret configured for any of its runs is in any of their output."""
    start = len(CAPTURED)
    yield
    runs = CAPTURED[start:]
    secrets = set().union(*(s for s, _ in runs)) if runs else set()
    for index, (_, output) in enumerate(runs):
        leaked = sorted(len(s) for s in secrets if s in output)
        assert not leaked, f"run {index} of this test printed a configured secret"


@pytest.fixture(scope="module")
def emulator():
    with Emulator(objects=120, seed=11) as emu:
        yield emu


def emulator_config(emu: Emulator, **extra) -> dict:
    return {"api_key": emu.api_key, "api_url": emu.url, "max_retry_seconds": 10, **extra}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """In CI (CI=true) Hypothesis runs every test from one seed, the same each run, and
    keeps no example database: a failure there fails the same way on the next run and on
    a laptop given that seed. `HYPOTHESIS_SEED=N` (or `--hypothesis-seed=N`) picks another.
    Elsewhere Hypothesis draws new examples each run, its seed printed on a failure."""
    from hypothesis import settings

    settings.register_profile("ci", database=None, print_blob=True)
    if in_ci():
        settings.load_profile("ci")
        if config.getoption("hypothesis_seed", None) is None:
            config.option.hypothesis_seed = os.environ.get("HYPOTHESIS_SEED", "0")


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("hypothesis_seed", None)
    if seed is None:
        return None
    return f"hypothesis seed: {seed} (again: HYPOTHESIS_SEED={seed} or --hypothesis-seed={seed})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A module's `NO_VALUES_EXPECTED` (test name: why) lets those tests, and only those,
    find no non-null value to test (see tests/test_core.py)."""
    for item in items:
        expected = getattr(getattr(item, "module", None), "NO_VALUES_EXPECTED", {})
        if item.name in expected:
            item.add_marker(
                pytest.mark.filterwarnings("ignore:No records were available to test:UserWarning")
            )
