"""Run folders: the sockets and shared files of one server's processes, in the system's temporary folder.

Each holds a note of the process that made it, which removes it on the way out. A server killed outright
never gets there, and its folder (stored Responses' text, in a launcher's) would stay: the next one to
start removes every folder whose maker is gone.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

PREFIX = "pyinfer-"
MAKER = "maker"  # the note: the maker's pid and start time (a pid alone may be a new process's by now)


def make_run_dir(kind: str) -> Path:
    """A new run folder (`pyinfer-<kind>...`), after removing those left by processes that are gone."""
    remove_orphans()
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}"))
    me = psutil.Process()
    (path / MAKER).write_text(f"{me.pid} {me.create_time()!r}")
    return path


def remove_orphans(root: Path | None = None) -> None:
    """Remove the run folders in `root` (the temporary folder) whose maker is gone. A folder without the
    note is left alone: one being made this moment, or an older version's."""
    for path in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if path.is_dir() and _maker_gone(path):
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, left by a process that is gone", path)


def _maker_gone(path: Path) -> bool:
    try:
        pid, created = (path / MAKER).read_text().split()
        return abs(psutil.Process(int(pid)).create_time() - float(created)) > 0.01
    except (OSError, ValueError):  # no note (yet), or one not ours to read
        return False
    except psutil.NoSuchProcess:
        return True
