"""What the API processes of one server share: stored Responses and rate-limit buckets, in one SQLite
database. Several API processes (api_servers.py) open one file in the launcher's run directory; a
single one keeps it in memory. Each process holds one connection, used from its event loop only: every
call is one short statement or transaction, serialized beforehand, so none is moved off the loop. Times
are CLOCK_MONOTONIC seconds, one clock for every process of the host (and the database lives as long as
the server).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

IN_MEMORY = ":memory:"  # one API process: nothing to share, nothing left behind
BUSY_TIMEOUT_MS = 2000  # how long a write waits for another process's, which holds it for one short statement
WAL_LIMIT_BYTES = 64 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY,  -- order of storing: the oldest are dropped first
    id TEXT NOT NULL UNIQUE,
    owner TEXT,               -- the API key's name that created it (NULL without keys)
    status TEXT NOT NULL,     -- beside the JSON: a cancel changes it alone
    response TEXT NOT NULL,   -- the ResponseObject as JSON
    messages TEXT NOT NULL,   -- the conversation before the reply, as JSON
    input_items TEXT NOT NULL, -- the request's own input, as Responses items in JSON
    stored_at REAL NOT NULL   -- time.monotonic() seconds
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (stored_at);
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT NOT NULL,        -- the API key's name
    kind TEXT NOT NULL,       -- requests | tokens
    per_minute INTEGER NOT NULL,
    level REAL NOT NULL,
    stamp REAL NOT NULL,      -- time.monotonic() seconds the level was taken at
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
        self.db.execute(
            f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}"
        )  # the log shrinks back after a burst
        self.db.executescript(SCHEMA)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A read-then-write transaction. IMMEDIATE takes the write lock at its start: a deferred one that
        read first could not upgrade once another process had written (SQLITE_BUSY, no retry). However it
        ends, none is left open (a failed COMMIT included: SQLite may or may not have rolled it back)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        finally:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()
