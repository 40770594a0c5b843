"""Run folders left by a server killed outright are removed by the next; no live server's is."""

from __future__ import annotations

import subprocess
import sys

import psutil

from pyinfer.run_dirs import MAKER, PREFIX, remove_orphans


def made_by(root, name: str, note: str | None):
    path = root / f"{PREFIX}{name}"
    path.mkdir()
    (path / "shared.sqlite").write_text("a stored response")
    if note is not None:
        (path / MAKER).write_text(note)
    return path


def test_a_folder_whose_maker_is_gone_is_removed_and_no_other(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(gone.pid).create_time()
    gone.wait()
    me = psutil.Process()
    orphan = made_by(tmp_path, "api-orphan", f"{gone.pid} {created!r}")
    reused = made_by(tmp_path, "api-reused", f"{me.pid} {me.create_time() - 100!r}")  # the pid now another's
    live = made_by(tmp_path, "api-live", f"{me.pid} {me.create_time()!r}")
    unnoted = made_by(tmp_path, "core-unnoted", None)  # being made this moment, or an older version's
    other = tmp_path / "not-ours"
    other.mkdir()
    remove_orphans(tmp_path)
    assert not orphan.exists() and not reused.exists()
    assert live.exists() and unnoted.exists() and other.exists()
