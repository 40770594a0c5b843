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


def test_the_kernels_build_from_every_source_and_a_header_counts_in_the_source_hash(monkeypatch, tmp_path):
    from pyinfer.kernels import cpu

    assert set(cpu.SOURCES) == set(cpu.CSRC.glob("*.cpp"))  # a new kernel file is compiled too
    assert {p.name for p in cpu.HEADERS} >= {"common.h", "ops.h"}
    source, header = tmp_path / "kernel.cpp", tmp_path / "shared.h"
    source.write_text("int kernel();\n")
    header.write_text("// shared\n")
    monkeypatch.setattr(cpu, "SOURCES", [source])
    monkeypatch.setattr(cpu, "HEADERS", [header])
    before = cpu._source_hash()
    header.write_text("// shared, edited\n")
    assert cpu._source_hash() != before  # a changed header is measured again, as a changed .cpp is
