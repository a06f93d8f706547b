"""SQLite task store: the embedded default (one file, survives restarts, several processes)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from serve.tasks.record import TaskRecord
from serve.tasks.store import TaskStore

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
        self._lock = threading.Lock()

    async def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        def work() -> list[tuple]:
            with self._lock:
                cursor = self._db.execute(sql, params)
                rows = cursor.fetchall()
                self._rowcount = cursor.rowcount
                return rows

        return await asyncio.to_thread(work)

    async def _insert(self, record: TaskRecord) -> None:
        await self._run("INSERT INTO tasks VALUES (?, ?, ?, ?)",
                        (record.task_id, record.version, record.expires_at, record.model_dump_json()))

    async def _load(self, task_id: str) -> TaskRecord | None:
        rows = await self._run("SELECT body FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRecord.model_validate_json(rows[0][0]) if rows else None

    async def _compare_and_set(self, record: TaskRecord, expected_version: int) -> bool:
        def work() -> bool:
            with self._lock:
                cursor = self._db.execute(
                    "UPDATE tasks SET version = ?, expires_at = ?, body = ? WHERE task_id = ? AND version = ?",
                    (record.version, record.expires_at, record.model_dump_json(), record.task_id, expected_version))
                return cursor.rowcount == 1

        return await asyncio.to_thread(work)

    async def _all(self) -> Iterable[TaskRecord]:
        rows = await self._run("SELECT body FROM tasks")
        return [TaskRecord.model_validate_json(body) for (body,) in rows]

    async def pending_ahead(self, record: TaskRecord) -> int:
        # Counted inside SQLite (JSON read in C), not by loading every record into Python.
        rows = await self._run(
            "SELECT COUNT(*) FROM tasks WHERE json_extract(body, '$.status') = 'PENDING'"
            " AND json_extract(body, '$.model') = ? AND expires_at >= ?"
            " AND (json_extract(body, '$.submit_time') < ?"
            "      OR (json_extract(body, '$.submit_time') = ? AND task_id < ?))",
            (record.model, time.time(), record.submit_time, record.submit_time, record.task_id))
        return int(rows[0][0])

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
