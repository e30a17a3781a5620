"""A 404 on an invoice's line list means the same wherever the list is read.

Stripe has no such invoice any more (404 `resource_missing`: deleted since it was read):
a warning naming it, the run goes on, and no ACTIVATE_VERSION (which would drop rows the
run did not read). Stripe does not know the URL (404 "Unrecognized request URL"): nothing
was read, and the stream fails with one line. Through the CLI against the emulator, with
invoices of 14 lines (Stripe embeds 10: the rest come from `/v1/invoices/:id/lines`).
"""

from __future__ import annotations

import json

import pytest

from tests.catalogs import tap_catalog
from tests.conftest import TapRun, run_tap
from tests.emulator import Emulator
from tests.test_faults import SECRET, config

STREAMS = ("invoices", "invoice_line_items", "invoice_items", "charges")
GONE = {
    "error": {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "param": "invoice",
        "message": "No such invoice",
    }
}
UNKNOWN = {
    "error": {
        "type": "invalid_request_error",
        "message": "Unrecognized request URL (GET: /v1/invoices/x/lines).",
    }
}


@pytest.fixture
def emu():
    with Emulator(objects=40, seed=61, lines_per_invoice=14, api_keys={SECRET: None}) as emulator:
        yield emulator


def run(emu: Emulator, tmp_path, state=None) -> TapRun:
    return run_tap(
        config=config(emu),
        catalog=json.loads(tap_catalog(SECRET, *STREAMS)),
        state=state,
        tmp_path=tmp_path,
        timeout=120,
    )


def lines_path(invoice_id: str) -> str:
    return f"/v1/invoices/{invoice_id}/lines"


def activated(result: TapRun) -> set[str]:
    return {m["stream"] for m in result.messages if m["type"] == "ACTIVATE_VERSION"}


def test_an_invoice_gone_while_listed_is_a_warning_and_no_activate_version(emu, tmp_path):
    invoice = emu.objects("invoices")[0]["id"]
    emu.inject(404, count=100, path_prefix=lines_path(invoice), should_retry=False, body=GONE)
    result = run(emu, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [ln for ln in result.stderr.splitlines() if "gone since it was listed" in ln]
    assert warned, result.stderr[-3000:]
    assert all(invoice in ln and "invoice_line_items" in ln for ln in warned), warned
    # The table was not read whole: none of its rows may be dropped.
    assert not {"invoices", "invoice_line_items"} & activated(result)
    assert "charges" in activated(result)
    # The invoice's embedded lines were still written.
    lines = [r for r in result.records("invoice_line_items") if r["invoice"] == invoice]
    assert len(lines) == 10


def test_an_unknown_line_list_url_fails_the_stream(emu, tmp_path):
    invoice = emu.objects("invoices")[0]["id"]
    emu.inject(404, count=100, path_prefix=lines_path(invoice), should_retry=False, body=UNKNOWN)
    result = run(emu, tmp_path)
    assert result.returncode != 0
    assert "does not serve the endpoint" in result.error_line, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_an_invoice_gone_before_its_event_is_read_is_a_warning_too(emu, tmp_path):
    first = run(emu, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    invoice = emu.objects("invoices")[0]["id"]
    emu.advance(120)
    emu.update("invoices", invoice, {"metadata": {"changed": "1"}})
    emu.advance(120)
    emu.inject(404, count=100, path_prefix=lines_path(invoice), should_retry=False, body=GONE)
    second = run(emu, tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr[-3000:]
    warned = [ln for ln in second.stderr.splitlines() if "gone since it was listed" in ln]
    # Both readers of the list say so: the lines (children of the invoice) and the
    # invoice items its lines name (`invoice_items` follows invoices' events).
    assert any("'invoice_line_items'" in ln and invoice in ln for ln in warned), warned
    assert any("'invoice_items'" in ln and invoice in ln for ln in warned), warned
    assert json.dumps(second.last_state)  # a STATE was written
