"""SQLite task store: the embedded default (one file, survives restarts, several processes).

A record is a JSON body beside the columns its indexes need (`IndexEntry`), written in the same
statement, so an index never disagrees with its record. A file written by an older version
(body only) gets the columns and their values on first open. The indexes cover their queries
(expiry included), so a count reads index entries only.

SQLite counts a range entry by entry, so a list's `total` comes from `task_counts` instead:
records per (key, model, status), kept by triggers in the statement that changes a record (so
never out of step with it), less the key's records already expired but not yet purged (an
index range of at most a purge interval's records). A list between two submit times still
counts its range. A queue position counts at most POSITION_CAP entries (Redis: a rank lookup).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from serve.tasks.store.base import POSITION_CAP, IndexEntry, Mutation, TaskStore
from serve.tasks.store.record import TaskRecord, TaskStatus

_UPDATE = ("UPDATE tasks SET version = ?, expires_at = ?, body = ?, key_id = ?, model = ?, status = ?, "
           "submit_time = ?, lease_due = ?, webhook_due = ? WHERE task_id = ?")
_INDEX_COLUMNS = {"key_id": "TEXT", "model": "TEXT", "status": "TEXT", "submit_time": "REAL",
                  "lease_due": "REAL", "webhook_due": "REAL"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fingerprints (
    fingerprint TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    expires_at REAL NOT NULL
)"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_by_key ON tasks (key_id, submit_time, expires_at);
CREATE INDEX IF NOT EXISTS tasks_by_key_status ON tasks (key_id, status, submit_time, expires_at);
CREATE INDEX IF NOT EXISTS tasks_by_key_model ON tasks (key_id, model, status, submit_time, expires_at);
CREATE INDEX IF NOT EXISTS tasks_pending ON tasks (model, status, submit_time, task_id, expires_at);
CREATE INDEX IF NOT EXISTS tasks_by_lease ON tasks (lease_due) WHERE lease_due IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_webhook ON tasks (webhook_due) WHERE webhook_due IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_expiry ON tasks (expires_at);
CREATE INDEX IF NOT EXISTS tasks_by_key_expiry ON tasks (key_id, expires_at, model, status);
CREATE INDEX IF NOT EXISTS fingerprints_by_expiry ON fingerprints (expires_at)"""


# Records per (key, model, status), kept by triggers. NULL columns (a file of an older version)
# count as ''. One statement an item: they run inside one transaction.
_KEY = "COALESCE({row}.key_id, ''), COALESCE({row}.model, ''), COALESCE({row}.status, '')"
_ADD = ("INSERT INTO task_counts VALUES (" + _KEY.format(row="NEW") + ", 1) "
        "ON CONFLICT (key_id, model, status) DO UPDATE SET n = n + 1;")
_TAKE = ("UPDATE task_counts SET n = n - 1 WHERE (key_id, model, status) = (" + _KEY.format(row="OLD") + ");")
_COUNTS = [
    "CREATE TABLE task_counts (key_id TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, "
    "n INTEGER NOT NULL, PRIMARY KEY (key_id, model, status)) WITHOUT ROWID",
    "INSERT INTO task_counts SELECT COALESCE(key_id, ''), COALESCE(model, ''), COALESCE(status, ''), COUNT(*) "
    "FROM tasks GROUP BY 1, 2, 3",
    f"CREATE TRIGGER count_inserted AFTER INSERT ON tasks BEGIN {_ADD} END",
    f"CREATE TRIGGER count_deleted AFTER DELETE ON tasks BEGIN {_TAKE} END",
    "CREATE TRIGGER count_moved AFTER UPDATE OF key_id, model, status ON tasks WHEN OLD.key_id IS NOT NEW.key_id "
    f"OR OLD.model IS NOT NEW.model OR OLD.status IS NOT NEW.status BEGIN {_TAKE} {_ADD} END",
]


def _where(*clauses: tuple[str, object]) -> tuple[str, list]:
    """The AND of the clauses whose value is given, and those values."""
    given = [(clause, value) for clause, value in clauses if value is not None]
    return " AND ".join(clause for clause, _ in given), [value for _, value in given]


def _columns(record: TaskRecord) -> tuple:
    entry = IndexEntry.of(record)
    return (entry.key_id, entry.model, entry.status, entry.submit_time, entry.lease_due, entry.webhook_due)


class SQLiteTaskStore(TaskStore):
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection per store, used from worker threads one at a time; WAL lets other
        # processes (another ingress, the CLI) read and write the same file.
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of any process; only an OS crash or power loss
        # can drop the last commits. Saves an fsync per task transition.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db.executescript(_INDEXES)
        self._add_counts()
        self._lock = threading.Lock()

    def _add_counts(self) -> None:
        """Create `task_counts`, counted from the records there (once; in one transaction, so
        another process opening the file at the same time finds it whole or makes it)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'task_counts'").fetchall():
                for statement in _COUNTS:
                    self._db.execute(statement)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        """Give a file of an older version the index columns, filled from each body (once)."""
        present = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        missing = [name for name in _INDEX_COLUMNS if name not in present]
        if not missing:
            return
        self._db.execute("BEGIN IMMEDIATE")
        for name in missing:
            self._db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {_INDEX_COLUMNS[name]}")
        for task_id, body in self._db.execute("SELECT task_id, body FROM tasks").fetchall():
            self._db.execute("UPDATE tasks SET key_id = ?, model = ?, status = ?, submit_time = ?, lease_due = ?, "
                             "webhook_due = ? WHERE task_id = ?",
                             (*_columns(TaskRecord.model_validate_json(body)), task_id))
        self._db.execute("COMMIT")

    async def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        def work() -> list[tuple]:
            with self._lock:
                return self._db.execute(sql, params).fetchall()

        return await asyncio.to_thread(work)

    async def _insert(self, record: TaskRecord) -> None:
        await self._run("INSERT INTO tasks (task_id, version, expires_at, body, key_id, model, status, submit_time, "
                        "lease_due, webhook_due) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (record.task_id, record.version, record.expires_at, record.model_dump_json(),
                         *_columns(record)))

    async def update(self, task_id: str, mutate: Mutation) -> TaskRecord | None:
        """Read, mutate and write in one transaction on one thread (one hop off the event loop,
        not two): `BEGIN IMMEDIATE` holds the file's write lock from the read to the write, so
        no other process changes the record between them."""
        def work() -> TaskRecord | None:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    changed = self._mutated(task_id, mutate)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return changed

        return await asyncio.to_thread(work)

    def _mutated(self, task_id: str, mutate: Mutation) -> TaskRecord | None:
        rows = self._db.execute("SELECT body FROM tasks WHERE task_id = ?", (task_id,)).fetchall()
        if not rows:
            return None
        current = TaskRecord.model_validate_json(rows[0][0])
        changed = mutate(current.model_copy(deep=True))
        if changed is None:
            return None
        changed.version = current.version + 1
        self._db.execute(_UPDATE, (changed.version, changed.expires_at, changed.model_dump_json(), *_columns(changed),
                                   task_id))
        return changed

    async def _load(self, task_id: str) -> TaskRecord | None:
        rows = await self._run("SELECT body FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRecord.model_validate_json(rows[0][0]) if rows else None

    async def _compare_and_set(self, record: TaskRecord, expected_version: int) -> bool:
        def work() -> bool:
            with self._lock:
                cursor = self._db.execute(_UPDATE + " AND version = ?",
                                          (record.version, record.expires_at, record.model_dump_json(),
                                           *_columns(record), record.task_id, expected_version))
                return cursor.rowcount == 1

        return await asyncio.to_thread(work)

    async def list(self, *, key_id: str, status: str | None = None, model: str | None = None,
                   start: float | None = None, end: float | None = None, page_no: int = 1,
                   page_size: int = 10) -> tuple[list[TaskRecord], int]:
        # `+expires_at`: a filter, not an index range, or the planner takes the key's expiry index
        # and sorts all of the key's records for a page.
        condition, params = _where(("key_id = ?", key_id), ("+expires_at >= ?", time.time()), ("status = ?", status),
                                   ("model = ?", model), ("submit_time >= ?", start), ("submit_time <= ?", end))
        if start is None and end is None:
            total = await self._counted(key_id, status, model)
        else:  # a time range: its entries are counted
            [(total,)] = await self._run(f"SELECT COUNT(*) FROM tasks WHERE {condition}", tuple(params))
        rows = await self._run(f"SELECT body FROM tasks WHERE {condition} ORDER BY submit_time DESC LIMIT ? OFFSET ?",
                               (*params, page_size, (page_no - 1) * page_size))
        return [TaskRecord.model_validate_json(body) for (body,) in rows], int(total)

    async def _counted(self, key_id: str, status: str | None, model: str | None) -> int:
        """The key's live records (of `status`, of `model`): its counts, less those expired and
        not yet purged (by key and expiry: the other key indexes would read all of the key's)."""
        condition, params = _where(("key_id = ?", key_id), ("status = ?", status), ("model = ?", model))
        [(total,)] = await self._run(
            f"SELECT (SELECT COALESCE(SUM(n), 0) FROM task_counts WHERE {condition}) - (SELECT COUNT(*) FROM "
            f"tasks INDEXED BY tasks_by_key_expiry WHERE {condition} AND expires_at < ?)",
            (*params, *params, time.time()))
        return int(total)

    async def kept(self, key_id: str) -> int:
        [(total,)] = await self._run("SELECT COALESCE(SUM(n), 0) FROM task_counts WHERE key_id = ?", (key_id,))
        return int(total)

    async def pending_ahead(self, record: TaskRecord) -> int:
        rows = await self._run(
            "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE model = ? AND status = ? AND expires_at >= ?"
            " AND (submit_time < ? OR (submit_time = ? AND task_id < ?)) LIMIT ?)",
            (record.model, TaskStatus.PENDING.value, time.time(), record.submit_time, record.submit_time,
             record.task_id, POSITION_CAP))
        return int(rows[0][0])

    async def _lease_expired(self, now: float, limit: int) -> list[str]:
        rows = await self._run("SELECT task_id FROM tasks WHERE lease_due < ? ORDER BY lease_due LIMIT ?", (now, limit))
        return [task_id for (task_id,) in rows]

    async def _webhooks_due(self, now: float, limit: int) -> list[str]:
        rows = await self._run("SELECT task_id FROM tasks WHERE webhook_due <= ? ORDER BY webhook_due LIMIT ?",
                               (now, limit))
        return [task_id for (task_id,) in rows]

    async def _expired(self, now: float, limit: int) -> list[str]:
        rows = await self._run("SELECT task_id FROM tasks WHERE expires_at < ? LIMIT ?", (now, limit))
        return [task_id for (task_id,) in rows]

    async def remember(self, fingerprint: str, task_id: str, expires_at: float) -> None:
        await self._run("INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?)", (fingerprint, task_id, expires_at))

    async def recall(self, fingerprint: str) -> str | None:
        rows = await self._run("SELECT task_id FROM fingerprints WHERE fingerprint = ? AND expires_at >= ?",
                               (fingerprint, time.time()))
        return rows[0][0] if rows else None

    async def _delete(self, task_ids: list[str]) -> None:
        marks = ",".join("?" * len(task_ids))
        await self._run(f"DELETE FROM tasks WHERE task_id IN ({marks})", tuple(task_ids))
        await self._run("DELETE FROM fingerprints WHERE expires_at < ?", (time.time(),))

    async def close(self) -> None:
        self._db.close()
