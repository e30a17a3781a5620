"""The run lock: one lock for the shared state dict of a run, and for every message but
records.

Streams sync in parallel threads. Every change to the state dict, and every Singer message
but a chunk of RECORD lines, happens under this lock, so a STATE message is always a
consistent snapshot of what was written before it. Nothing else in the tap locks state.
The bytes on stdout have a lock of their own (`output/writer.py`, `OUTPUT_LOCK`, always
taken after this one): a chunk of records waiting on a full pipe holds only that.
"""

from __future__ import annotations

import threading

RUN_LOCK = threading.RLock()
