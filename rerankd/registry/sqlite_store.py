"""The desired state on one host: a SQLite file (WAL) in the data directory.

Every gunicorn worker opens the same file. A write is one `BEGIN IMMEDIATE` transaction (the
check, the row, the version bump), so two workers never lose each other's changes the way
rewriting a JSON file from each worker's own view did. WAL lets readers poll the version while
a writer commits. The file must be on a local disk (SQLite's locks do not hold over NFS).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from rerankd.errors import Conflict
from rerankd.registry.desired import (
    Snapshot,
    StoredLaunch,
    StoreUnavailable,
    check_put,
    check_unlaunched,
    collect,
    decode_launch,
    encode_launch,
    encode_registration,
)
from rerankd.registry.spec import LaunchRequest, Registration

FILE_NAME = "registry.sqlite3"
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS launches (uid TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('version', 0);
"""


class SqliteStore:
    def __init__(self, data_dir: Path, timeout: float = 5.0) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self.description = f"sqlite:{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit mode: transactions are the explicit BEGIN IMMEDIATE below.
        self._db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._write() as db:
                for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    db.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that takes the write lock first: no read-modify-write races."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _run(self, work: Callable[[], _T]) -> _T:
        with self._lock:
            try:
                return work()
            except sqlite3.Error as exc:
                raise StoreUnavailable(
                    f"the registry store {self.path} failed ({exc}); nothing was changed"
                ) from exc

    def _bump(self, db: sqlite3.Connection) -> int:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")
        row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0])

    def version(self) -> int:
        def read() -> int:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            return int(row[0])

        return self._run(read)

    def snapshot(self) -> Snapshot:
        def read() -> Snapshot:
            self._db.execute("BEGIN")  # one consistent read of the three tables
            try:
                version = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'version'"
                ).fetchone()[0]
                regs = dict(self._db.execute("SELECT name, body FROM registrations").fetchall())
                runs = dict(self._db.execute("SELECT uid, body FROM launches").fetchall())
            finally:
                self._db.execute("COMMIT")
            return collect(int(version), regs, runs, self.description)

        return self._run(read)

    def put_registration(self, registration: Registration, *, by: str, replace: bool) -> int:
        body = encode_registration(registration, by)  # refused before anything is kept
        name = registration.model_name

        def write() -> int:
            with self._write() as db:
                found = db.execute("SELECT 1 FROM registrations WHERE name = ?", (name,))
                check_put(found.fetchone() is not None, name, replace)
                db.execute(
                    "INSERT OR REPLACE INTO registrations (name, body) VALUES (?, ?)", (name, body)
                )
                return self._bump(db)

        return self._run(write)

    def delete_registration(self, name: str) -> int:
        def write() -> int:
            with self._write() as db:
                check_unlaunched(name, dict(db.execute("SELECT uid, body FROM launches")))
                db.execute("DELETE FROM registrations WHERE name = ?", (name,))
                return self._bump(db)

        return self._run(write)

    def put_launch(self, request: LaunchRequest, *, by: str) -> int:
        body = encode_launch(request, by)
        uid = request.model_uid

        def write() -> int:
            with self._write() as db:
                found = db.execute("SELECT 1 FROM launches WHERE uid = ?", (uid,)).fetchone()
                if found is not None:
                    raise Conflict(f"a model runs as {uid!r} already")
                db.execute("INSERT INTO launches (uid, body) VALUES (?, ?)", (uid, body))
                return self._bump(db)

        return self._run(write)

    def delete_launch(self, uid: str) -> int:
        def write() -> int:
            with self._write() as db:
                db.execute("DELETE FROM launches WHERE uid = ?", (uid,))
                return self._bump(db)

        return self._run(write)

    def launch(self, uid: str) -> StoredLaunch | None:
        def read() -> StoredLaunch | None:
            row = self._db.execute("SELECT body FROM launches WHERE uid = ?", (uid,)).fetchone()
            return None if row is None else decode_launch(uid, row[0])

        try:
            return self._run(read)
        except (ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
