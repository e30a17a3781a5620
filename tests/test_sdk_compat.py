"""Every private singer-sdk name the tap uses is in `sdk_compat.py`, and is still what
that module was written against: each test fails when an SDK upgrade changes one."""

from __future__ import annotations

import ast
import hashlib
import inspect
import signal
from pathlib import Path

import pytest
from singer_sdk import Stream, Tap
from singer_sdk.helpers import _catalog, _state, _typing
from singer_sdk.streams import _state as stream_state

from tap_stripe_connect.output.writer import LockedStateWriter
from tap_stripe_connect.sdk_compat import CompatTap
from tap_stripe_connect.stop import CancelledError
from tap_stripe_connect.tap import TapStripeConnect

PACKAGE = Path(__file__).resolve().parents[1] / "tap_stripe_connect"


def signature(func) -> str:
    return str(inspect.signature(func))


def source_digest(func) -> str:
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (
            Stream._increment_stream_state,
            "(self, latest_record: 'types.Record', *, context: 'types.Context | None' = None)"
            " -> 'None'",
        ),
        (Stream._write_state_message, "(self) -> 'None'"),
        (Stream._write_activate_version_message, "(self, full_table_version: 'int') -> 'None'"),
        (Stream._write_schema_message, "(self) -> 'None'"),
        (
            Stream._generate_record_messages,
            "(self, record: 'types.Record') -> 't.Generator[singer.RecordMessage, None, None]'",
        ),
        (Tap._validate_config, "(self, *, raise_errors: 'bool' = True) -> 'list[str]'"),
        (Tap._reset_state_progress_markers, "(self) -> 'None'"),
        (Tap._set_compatible_replication_methods, "(self) -> 'None'"),
        (
            _catalog.pop_deselected_record_properties,
            "(record: 'dict[str, t.Any]', schema: 'dict', mask: 'SelectionMask', "
            "breadcrumb: 'tuple[str, ...]' = ()) -> 'None'",
        ),
        (
            _typing.conform_record_data_types,
            "(stream_name: 'str', record: 'dict[str, t.Any]', schema: 'dict', "
            "level: 'conform.TypeConformanceLevel', logger: 'logging.Logger') -> "
            "'dict[str, t.Any]'",
        ),
        (
            stream_state.StreamStateManager.__init__,
            "(self, *, stream_name: 'str', tap_state: 'types.TapState', is_sorted: 'bool' = "
            "False, check_sorted: 'bool' = True, tap_name: 'str | None' = None, "
            "state_partitioning_keys: 't.Sequence[str] | None' = None) -> 'None'",
        ),
        (_state.StateWriter.write_state, "(self, state: 'types.TapState') -> 'None'"),
    ],
    ids=lambda v: getattr(v, "__qualname__", "signature"),
)
def test_private_sdk_functions_keep_their_signature(func, expected):
    assert signature(func) == expected


@pytest.mark.parametrize(
    ("func", "digest", "why"),
    [
        # sdk_compat.CompatStream._generate_record_messages is a copy of it.
        (Stream._generate_record_messages, "9b5f9fbcdedb7a1a", "copied"),
        # CompatTap.sync_all -> tap.run_sync repeats its steps for parallel streams.
        (Tap.sync_all, "e4412393757b4cdc", "its steps repeated"),
        # CompatStream.state_manager builds the manager the way it does.
        (Stream.state_manager.fget, "d3b50b3794edd56a", "rebuilt"),
        # CompatTap._handle_termination replaces the SDK's signal handler (tap.on_signal).
        (Tap._handle_termination, "2bb79ae47769883a", "replaced"),
    ],
    ids=lambda v: getattr(v, "__qualname__", str(v)),
)
def test_sdk_code_the_tap_copies_or_replaces_is_unchanged(func, digest, why):
    assert source_digest(func) == digest, (
        f"singer-sdk changed {func.__qualname__} ({why} in sdk_compat.py): update both"
    )


def test_state_manager_methods_the_locked_manager_wraps_exist():
    from tap_stripe_connect.state.bookmarks import LOCKED_METHODS

    for name in LOCKED_METHODS:
        assert callable(getattr(stream_state.StreamStateManager, name)), name
    assert isinstance(stream_state.StreamStateManager.stream_state, property)


def test_private_attributes_the_compat_classes_use_exist():
    tap = TapStripeConnect(
        config={"api_key": "sk_test_compat", "account_id": "acct_compat"}, setup_mapper=False
    )
    stream = tap.streams["charges"]
    assert stream._tap is tap
    assert stream._tap_state is tap.state
    assert hasattr(stream, "_stream_version")
    assert hasattr(stream, "_state_manager")
    assert isinstance(tap._config, dict)


def test_the_sdks_own_state_messages_go_through_the_locked_writer(monkeypatch):
    """`use_state_writer` replaced the writer the SDK's own code writes STATE with (a
    stream's `_write_state_message`, and the SDK's steps the tap repeats): each STATE then
    goes out under the run lock, after the records it covers (writer.py)."""
    tap = TapStripeConnect(
        config={"api_key": "sk_test_compat", "account_id": "acct_compat"}, setup_mapper=False
    )
    written = []
    monkeypatch.setattr(
        LockedStateWriter, "write", lambda writer, state: written.append((writer, state)) or 0
    )
    stream = tap.streams["charges"]
    stream.state_manager.is_flushed = False
    stream._write_state_message()  # the SDK's code, as its stream methods call it
    assert len(written) == 1
    writer, state = written[0]
    assert isinstance(writer, LockedStateWriter)
    assert state is tap.state


def private_sdk_names(path: Path) -> list[str]:
    """`singer_sdk` modules or members whose name starts with `_`, and `x._name` uses of
    the SDK's private attributes, in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("singer_sdk"):
            parts = [*(node.module or "").split("."), *(a.name for a in node.names)]
            found += [p for p in parts if p.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [
                a.name for a in node.names if a.name.startswith("singer_sdk") and "._" in a.name
            ]
        elif isinstance(node, ast.Attribute) and node.attr in SDK_PRIVATE_ATTRIBUTES:
            found.append(node.attr)
        elif isinstance(node, ast.FunctionDef) and node.name in SDK_PRIVATE_ATTRIBUTES:
            found.append(node.name)  # an override of a private SDK method
    return found


SDK_PRIVATE_ATTRIBUTES = {
    name
    for cls in (Stream, Tap)
    for name in dir(cls)
    if name.startswith("_") and not name.startswith("__")
} | {"_tap", "_tap_state", "_state_manager", "_stream_version", "_config", "_state_writer"}


def test_no_private_sdk_name_outside_sdk_compat():
    offenders = {
        str(path.relative_to(PACKAGE)): names
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "sdk_compat.py" and (names := private_sdk_names(path))
    }
    assert offenders == {}
    # ...and the check does see them where they are.
    seen = set(private_sdk_names(PACKAGE / "sdk_compat.py"))
    assert {"_generate_record_messages", "_catalog", "_stream_version", "sync_all"} - seen == {
        "sync_all"  # public, though marked final
    }


@pytest.fixture
def own_signal_handlers():
    """The handlers of SIGTERM and SIGINT as they were, back after the test."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_the_signal_handler_the_sdk_installs_is_the_taps(own_signal_handlers):
    """The SDK installs `_handle_termination` when the tap is made; a real signal runs it.

    Before a sync: the run ends at once with the signal's exit code (143 for SIGTERM), not
    the SDK's `sys.exit(0)`. During a sync: the run is asked to stop (no page starts), and
    the handler returns: the sync's threads write what they read and the STATE.
    """
    tap = TapStripeConnect(
        config={"api_key": "sk_test_compat", "account_id": "acct_compat"}, setup_mapper=False
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        assert getattr(handler, "__self__", None) is tap, sig
        assert handler.__func__ is CompatTap._handle_termination  # type: ignore[union-attr]

    with pytest.raises(CancelledError) as raised:
        signal.raise_signal(signal.SIGTERM)
    assert raised.value.exit_code == 143
    assert "Stopped by SIGTERM" in str(raised.value)

    tap = TapStripeConnect(
        config={"api_key": "sk_test_compat", "account_id": "acct_compat"}, setup_mapper=False
    )
    tap.syncing = True  # as in `run_sync`
    try:
        signal.raise_signal(signal.SIGINT)  # returns: the sync's threads stop
    finally:
        if tap._deadline is not None:
            tap._deadline.cancel()  # the exit it set for GRACE_SECONDS later
    assert tap._deadline is not None
    assert tap.stop.requested
    assert tap.stop.signum == signal.SIGINT
    assert tap.client.stop is tap.stop
    with pytest.raises(CancelledError) as raised:
        tap.client.stop.check()  # what the client asks before every request
    assert raised.value.exit_code == 130
