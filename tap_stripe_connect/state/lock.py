"""The run lock: one lock for stdout and the shared state dict of a run.

Streams sync in parallel threads. Every Singer message and every change to the state
dict happens under this lock, so lines never interleave and a STATE message is always a
consistent snapshot of what was written before it. Nothing else in the tap locks state.
"""

from __future__ import annotations

import threading

RUN_LOCK = threading.RLock()
