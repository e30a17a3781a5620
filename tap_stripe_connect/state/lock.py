"""The run's two locks: one for stdout, one for the shared state dict.

Streams sync in parallel threads. Every Singer message is written under `RUN_LOCK`, so
lines never interleave. Every read and change of the state dict happens under
`STATE_LOCK`, so a STATE message is a consistent snapshot. A STATE is encoded under both
(`RUN_LOCK` first, always in that order), and the records collected before it are written
before it: a bookmark moves only after its records were collected, so whatever the
snapshot covers is on stdout before it.

`STATE_LOCK` is held only for changes in memory and the encoding of a STATE, never across
a write to stdout. A unit moving its bookmark after a page (every page of a platform's
thousands of units) then never waits for a write to a slow reader; when one lock covered
both, units queued behind every write and each handed the GIL on: a fifth of a platform
run's CPU in thread switches.
"""

from __future__ import annotations

import threading

RUN_LOCK = threading.RLock()
STATE_LOCK = threading.RLock()
