"""Building the C++ CPU kernels: an abandoned build lock must not hang every later start."""

from __future__ import annotations

import os
import time

from pyinfer.kernels.cpu import _remove_stale_lock


def test_an_abandoned_lock_is_removed_and_a_live_one_kept(tmp_path):
    abandoned, live = tmp_path / "old" / "lock", tmp_path / "new" / "lock"
    for lock in (abandoned, live):
        lock.parent.mkdir()
        lock.touch()
    hour_ago = time.time() - 3600
    os.utime(abandoned, (hour_ago, hour_ago))
    _remove_stale_lock(abandoned)
    _remove_stale_lock(live)
    _remove_stale_lock(tmp_path / "missing" / "lock")
    assert not abandoned.exists() and live.exists()
