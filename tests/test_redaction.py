"""Secrets never reach output: tracebacks are redacted like messages, and the set of
secrets can be read while a token refresh (another thread) adds to it."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import typing as t

from tap_stripe_connect import errors
from tap_stripe_connect.errors import install_redaction, redact, register_secrets
from tests.conftest import ROOT

SECRET = "sk_live_redactionTestSecret_Q7v"  # also shaped like a key
TOKEN = "opaque-refresh-token-9f2c71d0"  # shaped like nothing: only the set knows it


def test_a_logged_traceback_is_redacted_like_its_message():
    register_secrets([TOKEN])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    # As the SDK's console handler (or Meltano's): on the root logger, filtered.
    logging.getLogger().addHandler(handler)
    install_redaction()
    logger = logging.getLogger("tap-stripe-connect.test-redaction")
    try:
        try:
            raise RuntimeError(f"refresh failed for {TOKEN} with {SECRET}")
        except RuntimeError:
            logger.exception("Sync failed")
            logger.error("with a stack", stack_info=True, extra={"x": TOKEN})
    finally:
        logging.getLogger().removeHandler(handler)
    text = out.getvalue()
    assert "Traceback" in text
    assert "RuntimeError: refresh failed for ***" in text
    assert TOKEN not in text
    assert SECRET not in text


def test_an_uncaught_traceback_is_redacted():
    """Printed by Python's hook (before the SDK's, or in a thread), not by logging."""
    script = (
        "import threading\n"
        "from tap_stripe_connect.errors import install_redaction, register_secrets\n"
        f"register_secrets([{TOKEN!r}])\n"
        "install_redaction()\n"
        f"def fail(): raise ValueError('thread saw ' + {TOKEN!r})\n"
        "thread = threading.Thread(target=fail); thread.start(); thread.join()\n"
        f"raise ValueError('main saw ' + {TOKEN!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "ValueError: thread saw ***" in proc.stderr, proc.stderr
    assert "ValueError: main saw ***" in proc.stderr, proc.stderr
    assert TOKEN not in proc.stderr


class Refreshing(str):
    """A text whose every `in` test is when a token refresh registers a new secret."""

    __slots__ = ()

    def __contains__(self, part: object) -> bool:
        register_secrets([f"rotated-token-{len(errors._known_secrets)}-xyz"])
        return super().__contains__(t.cast("str", part))


def test_secrets_can_be_read_while_a_refresh_adds_one():
    register_secrets([TOKEN, "another-secret-0123"])
    text = Refreshing(f"a message with {TOKEN} in it")
    # Adding to the set while `redact` walks it raised "Set changed size during iteration".
    assert redact(text) == "a message with *** in it"
    added = [s for s in errors._known_secrets if s.startswith("rotated-token-")]
    assert added
    assert redact(f"later: {added[0]}") == "later: ***"
