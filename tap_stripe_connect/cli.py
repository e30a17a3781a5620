"""Command line entry point: the SDK's tap CLI, with errors reduced to one clear line."""

from __future__ import annotations

import atexit
import os
import sys
import typing as t

import click
from singer_sdk.exceptions import ConfigValidationError

from tap_stripe_connect.connect import connect
from tap_stripe_connect.connections import connections
from tap_stripe_connect.errors import TapError, install_redaction, redact
from tap_stripe_connect.inputs import check_input_files
from tap_stripe_connect.stop import CancelledError
from tap_stripe_connect.tap import TapStripeConnect

PROG = "tap-stripe-connect"
# The SDK's options that take a value: a `connect` right after one of them is that value.
_VALUE_OPTIONS = ("--config", "--catalog", "--state", "--format", "--test")
# `\b`: click keeps the paragraph's line breaks.
CONNECT_HELP = """\b
Commands:
  connect   "Connect with Stripe": Stripe Connect's OAuth flow in a browser;
            saves the connected account's credentials for the tap.
            tap-stripe-connect connect --help
            meltano invoke tap-stripe-connect:connect   (through Meltano)
  connections
            Every account the configuration reaches: flow, status, last sync,
            oldest bookmark and the command that fixes it.
            tap-stripe-connect connections --help
            meltano invoke tap-stripe-connect:connections   (through Meltano)"""


def fail(message: str) -> t.NoReturn:
    sys.stderr.write(f"{PROG}: error: {redact(message)}\n")
    sys.stderr.flush()
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Run the tap; any error a user can act on ends as one line and exit code 1."""
    install_redaction()
    args = sys.argv[1:] if argv is None else argv
    try:
        at = connect_position(args)
        listing = connect_position(args, "connections")
        if listing is not None:
            code = connections(args[:listing] + args[listing + 1 :])
        elif at is not None:
            # `--config` may come before `connect` (Meltano and habit put it first).
            code = connect(args[:at] + args[at + 1 :])
        else:
            # Unreadable input files end here, not in a traceback from the SDK.
            check_input_files(args)
            command = TapStripeConnect.cli
            command.epilog = CONNECT_HELP
            code = command.main(args=args, prog_name=PROG, standalone_mode=False)
    except CancelledError as exc:
        # Stopped by SIGTERM/SIGINT: 143/130, as a shell reports a process a signal ended.
        sys.stderr.write(f"{PROG}: {redact(str(exc))}\n")
        sys.stderr.flush()
        if argv is None:
            exit_now(exc.exit_code)
        sys.exit(exc.exit_code)
    except TapError as exc:
        fail(str(exc))
    except ConfigValidationError as exc:
        fail(f"Invalid settings: {'; '.join(redact(e) for e in exc.errors)}")
    except click.ClickException as exc:
        fail(exc.format_message())
    except click.exceptions.Abort:
        fail("Aborted.")
    except BrokenPipeError:
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)
    if argv is None:
        exit_now()


def connect_position(args: list[str], command: str = "connect") -> int | None:
    """Where the `connect` (or `command`) subcommand is in `args`, if it is there at all."""
    for index, arg in enumerate(args):
        if arg == command and (index == 0 or args[index - 1] not in _VALUE_OPTIONS):
            return index
    return None


def exit_now(code: int = 0) -> t.NoReturn:
    """End the process without the interpreter's teardown, once the run is over.

    Freeing every module and object one by one took ~0.15 s after a sync (~4% of a
    20,000-record one). Output is flushed and the exit handlers (logging's) run first;
    every thread of the sync has ended by then.
    """
    try:
        sys.stdout.flush()
    except OSError:  # stdout closed early: the records did not all arrive
        code = code or 1
    atexit._run_exitfuncs()
    sys.stderr.flush()
    os._exit(code)
