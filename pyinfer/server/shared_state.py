"""What the API processes of one server share: stored Responses and rate-limit buckets, in one SQLite
database. Several API processes (api_servers.py) open one file in the launcher's run directory; a
single one keeps it in memory. Each process holds one connection, used from its event loop only: every
call is one short statement or transaction (tens of microseconds), so none is moved off the loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

IN_MEMORY = ":memory:"  # one API process: nothing to share, nothing left behind
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's (each holds it for microseconds)

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY,  -- order of storing: the oldest are dropped first
    id TEXT NOT NULL UNIQUE,
    owner TEXT,               -- the API key's name that created it (NULL without keys)
    status TEXT NOT NULL,     -- beside the JSON: a cancel changes it alone
    response TEXT NOT NULL,   -- the ResponseObject as JSON
    messages TEXT NOT NULL,   -- the conversation before the reply, as JSON
    stored_at REAL NOT NULL   -- wall-clock seconds: the processes share no other clock
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (stored_at);
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT NOT NULL,        -- the API key's name
    kind TEXT NOT NULL,       -- requests | tokens
    per_minute INTEGER NOT NULL,
    level REAL NOT NULL,
    stamp REAL NOT NULL,      -- wall-clock seconds the level was taken at
    PRIMARY KEY (key, kind)
) WITHOUT ROWID;
"""


class SharedState:
    """One process's connection to the shared database."""

    def __init__(self, path: str = IN_MEMORY):
        # autocommit (isolation_level None): a lone statement commits itself; write() groups several
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
        self.db.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; a power cut may lose the last
        self.db.executescript(SCHEMA)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A read-then-write transaction. IMMEDIATE takes the write lock at its start: a deferred one that
        read first could not upgrade once another process had written (SQLITE_BUSY, no retry)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
