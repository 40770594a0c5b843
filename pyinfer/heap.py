"""Keeping a long-lived process's start-up objects out of the garbage collector's scans."""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """For a long-lived process once started: every object alive now leaves the garbage collector's
    scans, so a full collection while serving walks only what serving allocates, not the hundreds of
    thousands of objects that importing torch and transformers made (a pause of every stream the
    process holds). Frozen objects are still freed by reference counting; cycles among them are never
    collected."""
    gc.collect()
    gc.freeze()
