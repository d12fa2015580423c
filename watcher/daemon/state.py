"""The state file: watch checkpoints and the notification outbox, in SQLite.

SQLite from the standard library, in WAL mode (a crash leaves the last commit
intact; synchronous=NORMAL is safe against a killed process), created 0600. All
access goes through one worker thread, one call at a time: the event loop never
waits on the disk.

Promise (see README): a poll's events and the watch's new state are committed in
one transaction, with one outbox row per (event, notifier), *before* any send; a
notifier's rows are deleted after it accepted the message. After a crash every
event in the outbox is sent again to the notifiers that still lack it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

__all__ = ["OutboxRow", "StateError", "StateStore", "Stored", "WatchWrite"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS watches (
    key TEXT PRIMARY KEY,
    parent TEXT,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS outbox (
    event_id TEXT NOT NULL,
    notifier TEXT NOT NULL,
    route TEXT NOT NULL,
    event TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (event_id, notifier)
);
CREATE TABLE IF NOT EXISTS conditions (key TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_silences (id TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incident_refs (
    notifier TEXT NOT NULL,
    incident TEXT NOT NULL,
    data TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (notifier, incident)
);
CREATE TABLE IF NOT EXISTS api_watches (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    expires_at REAL
);
"""


class StateError(Exception):
    """The state file cannot be used; ``str()`` says why, without secrets."""


@dataclass(frozen=True, slots=True)
class WatchWrite:
    """A watch's durable state to store (``state=None``: forget the watch)."""

    key: str
    subject: str
    state: dict[str, Any] | None
    parent: str | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An event owed to a notifier."""

    event_id: str
    notifier: str
    route: str
    event: dict[str, Any]


@dataclass
class Stored:
    """Everything read back at start."""

    watches: dict[str, tuple[str | None, str, dict[str, Any], float | None]] = field(
        default_factory=dict
    )
    outbox: list[OutboxRow] = field(default_factory=list)
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_watches: dict[str, tuple[dict[str, Any], float | None]] = field(default_factory=dict)
    """Watches added through the HTTP API: their config entry and expiry (Unix time)."""
    api_silences: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Silences added through the HTTP API, as entries of ``silences``."""
    feeds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Where each push feed stood (its resume position and rows), by name."""
    incident_refs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """What notifiers that keep incidents did for each (a page, a Slack message's ts)."""


REFS_KEEP = 7 * 86400.0
"""Incident refs not touched for this long are dropped at start."""


def state_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the state file, or None: its directory must exist (the
    daemon does not create it: a typo would silently keep state somewhere unwatched)
    and be writable, as must the file if it exists."""
    parent = path.parent
    if not parent.is_dir():
        return (
            f"{path}: directory {parent} does not exist; create it "
            "(the systemd unit's StateDirectory= does)"
        )
    if path.exists():
        if not path.is_file():
            return f"{path}: not a regular file"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path}: not readable and writable by this user"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path}: directory {parent} is not writable by this user (SQLite needs its journal there)"
    return None


def _create_private(path: Path) -> None:
    """Create the file 0600 before SQLite opens it (SQLite would honour the umask)."""
    if (problem := state_file_problem(path)) is not None:
        raise StateError(problem)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)


class _Damaged(Exception):
    """The file is not a usable SQLite database."""


class StateStore:
    """Synchronous SQLite access; use :meth:`call` from async code."""

    def __init__(
        self, path: Path, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._now = now
        self.quarantined: Path | None = None
        """Where a damaged state file was moved before a fresh one was started."""

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating it 0600) and prepare the schema.

        A file that is not a database, or fails SQLite's integrity check, is moved
        aside (``<name>.corrupt-<time>``, with its journal) and a fresh one started:
        the daemon keeps watching, and says where the old file went.
        """
        try:
            self._open()
        except _Damaged as damaged:
            self.quarantined = self._move_aside()
            try:
                self._open()
            except _Damaged:
                raise StateError(
                    f"{self.path}: cannot start a fresh state file: {damaged}"
                ) from None
            return

    def _move_aside(self) -> Path:
        stamp = self._now().strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, target)
            for suffix in ("-wal", "-shm"):
                sidecar = Path(f"{self.path}{suffix}")
                if sidecar.exists():
                    os.replace(sidecar, Path(f"{target}{suffix}"))
        except OSError as exc:
            raise StateError(
                f"{self.path}: damaged, and cannot be moved aside: {exc.strerror or exc}"
            ) from None
        return target

    def _open(self) -> None:
        try:
            _create_private(self.path)
            db = sqlite3.connect(
                self.path, check_same_thread=False, timeout=5.0, isolation_level=None
            )
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                db.close()
                raise _Damaged(f"integrity check: {check[0] if check else 'no answer'}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise StateError(f"{self.path}: state file schema {row[0]} is not {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, unreadable: not damage
                raise StateError(f"{self.path}: cannot open the state file: {exc}") from None
            raise _Damaged(str(exc)) from None
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"{self.path}: cannot open the state file: {exc}") from None
        self._db = db
        for suffix in ("-wal", "-shm"):
            sidecar = Path(f"{self.path}{suffix}")
            if sidecar.exists():
                os.chmod(sidecar, 0o600)

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    @property
    def db_open(self) -> bool:
        """Whether the database could be opened."""
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection."""
        if self._db is None:
            raise StateError(f"{self.path}: the state file is not open")
        return self._db

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the store's thread, one call at a time."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # -- reading --------------------------------------------------------------------------

    def load(self) -> Stored:
        """Read every watch, the outbox and the open conditions."""
        stored = Stored()
        try:
            for key, parent, subject, state, finished in self.db.execute(
                "SELECT key, parent, subject, state, finished_at FROM watches"
            ):
                stored.watches[key] = (parent, subject, json.loads(state), finished)
            for event_id, notifier, route, event in self.db.execute(
                "SELECT event_id, notifier, route, event FROM outbox ORDER BY created, rowid"
            ):
                stored.outbox.append(OutboxRow(event_id, notifier, route, json.loads(event)))
            for key, data in self.db.execute("SELECT key, data FROM conditions"):
                stored.conditions[key] = json.loads(data)
            for key, config, expires_at in self.db.execute(
                "SELECT key, config, expires_at FROM api_watches"
            ):
                stored.api_watches[key] = (json.loads(config), expires_at)
            for ident, config in self.db.execute("SELECT id, config FROM api_silences"):
                stored.api_silences[ident] = json.loads(config)
            for key, value in self.db.execute(
                "SELECT key, value FROM meta WHERE key LIKE 'feed:%'"
            ):
                stored.feeds[key.removeprefix("feed:")] = json.loads(value)
            with contextlib.suppress(sqlite3.Error):  # a read-only file keeps them
                self.db.execute(
                    "DELETE FROM incident_refs WHERE updated < ?", (time.time() - REFS_KEEP,)
                )
            for notifier, incident, data in self.db.execute(
                "SELECT notifier, incident, data FROM incident_refs"
            ):
                stored.incident_refs[(notifier, incident)] = json.loads(data)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot read the state file: {exc}") from None
        return stored

    # -- writing ----------------------------------------------------------------------------

    def commit(
        self,
        watches: Sequence[WatchWrite] = (),
        outbox: Sequence[OutboxRow] = (),
        now: float = 0.0,
        conditions: Sequence[tuple[str, dict[str, Any] | None]] = (),
    ) -> None:
        """Write watch states, outbox rows and condition changes in one transaction."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            for w in watches:
                if w.state is None:
                    db.execute("DELETE FROM watches WHERE key = ?", (w.key,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO watches (key, parent, subject, state, finished_at) VALUES (?, ?, ?, ?, ?)",
                        (
                            w.key,
                            w.parent,
                            w.subject,
                            json.dumps(w.state, separators=(",", ":")),
                            w.finished_at,
                        ),
                    )
            db.executemany(
                "INSERT OR IGNORE INTO outbox (event_id, notifier, route, event, created) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        r.event_id,
                        r.notifier,
                        r.route,
                        json.dumps(r.event, separators=(",", ":")),
                        now,
                    )
                    for r in outbox
                ],
            )
            for key, data in conditions:
                if data is None:
                    db.execute("DELETE FROM conditions WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO conditions (key, data) VALUES (?, ?)",
                        (key, json.dumps(data, separators=(",", ":"))),
                    )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StateError(f"{self.path}: cannot write the state file: {exc}") from None

    def delivered(self, notifier: str, event_ids: Iterable[str]) -> None:
        """A notifier accepted these events: they are no longer owed to it."""
        try:
            self.db.executemany(
                "DELETE FROM outbox WHERE event_id = ? AND notifier = ?",
                [(event_id, notifier) for event_id in event_ids],
            )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot write the state file: {exc}") from None

    def put_api_watch(
        self, key: str, config: dict[str, Any] | None, expires_at: float | None = None
    ) -> None:
        """Keep (or, with ``config=None``, forget) a watch added through the API."""
        try:
            if config is None:
                self.db.execute("DELETE FROM api_watches WHERE key = ?", (key,))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO api_watches (key, config, expires_at) VALUES (?, ?, ?)",
                    (key, json.dumps(config, separators=(",", ":")), expires_at),
                )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot write the state file: {exc}") from None

    def put_api_silence(self, ident: str, config: dict[str, Any] | None) -> None:
        """Keep (or, with ``config=None``, forget) a silence added through the API."""
        try:
            if config is None:
                self.db.execute("DELETE FROM api_silences WHERE id = ?", (ident,))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO api_silences (id, config) VALUES (?, ?)",
                    (ident, json.dumps(config, separators=(",", ":"))),
                )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot write the state file: {exc}") from None

    def put_incident_ref(self, notifier: str, incident: str, data: dict[str, Any] | None) -> None:
        """Keep (or, with ``data=None``, forget) what a notifier did for an incident."""
        try:
            if data is None:
                self.db.execute(
                    "DELETE FROM incident_refs WHERE notifier = ? AND incident = ?",
                    (notifier, incident),
                )
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO incident_refs (notifier, incident, data, updated) "
                    "VALUES (?, ?, ?, ?)",
                    (notifier, incident, json.dumps(data, separators=(",", ":")), time.time()),
                )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot write the state file: {exc}") from None

    def put_feed(self, name: str, data: dict[str, Any] | None) -> None:
        """Keep (or, with ``data=None``, forget) where a push feed stands."""
        try:
            if data is None:
                self.db.execute("DELETE FROM meta WHERE key = ?", (f"feed:{name}",))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (f"feed:{name}", json.dumps(data, separators=(",", ":"))),
                )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot write the state file: {exc}") from None

    def forget_notifier(self, notifier: str) -> int:
        """Drop what is owed to a notifier that no longer exists; return how many rows."""
        try:
            return self.db.execute("DELETE FROM outbox WHERE notifier = ?", (notifier,)).rowcount
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot write the state file: {exc}") from None

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("ROLLBACK")

    def limit_pages(self, pages: int) -> None:
        """Cap the database size (``max_page_count``): a way to make the disk "full" in tests."""
        self.db.execute(f"PRAGMA max_page_count = {int(pages)}")

    def read_only(self, on: bool = True) -> None:
        """Refuse writes from now on (``query_only``): a read-only file, for tests."""
        self.db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")
