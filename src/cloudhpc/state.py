"""Cluster state store: SQLite under the state directory (one file for all clusters)."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudhpc.paths import ClusterDir, home

SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (
  name TEXT PRIMARY KEY, provider TEXT NOT NULL, status TEXT NOT NULL,
  cidr TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  cluster TEXT NOT NULL, job_id INTEGER NOT NULL, script TEXT NOT NULL, workdir TEXT NOT NULL,
  stdout TEXT NOT NULL, submitted REAL NOT NULL, PRIMARY KEY (cluster, job_id));
"""
# columns added after the first release: (table, column, declaration)
MIGRATIONS = [("clusters", "instance", "TEXT NOT NULL DEFAULT ''"),
              ("jobs", "uid", "INTEGER NOT NULL DEFAULT 0"),
              ("jobs", "token", "TEXT NOT NULL DEFAULT ''")]


@dataclass(frozen=True)
class ClusterRecord:
    name: str
    provider: str
    status: str
    cidr: str
    created: float
    instance: str = ""  # made at each `up`: tokens belong to one instance of a name
    base: Path = Path()  # the state directory (clusters/NAME/ below it)

    @property
    def dir(self) -> ClusterDir:
        return ClusterDir.of(self.name, self.base)

    @property
    def template(self) -> dict[str, Any]:
        """The cluster's template, from its one copy (paths.ClusterDir.template); {} if that
        is gone (a cluster removed half way: `down NAME` finishes it)."""
        try:
            return self.dir.read_template()
        except (OSError, ValueError):
            return {}


@dataclass(frozen=True)
class JobRecord:
    job_id: int
    script: str
    workdir: str
    stdout: str
    submitted: float
    uid: int = 0  # who owns the job: decided by cloudhpc at submission, never from Slurm text
    token: str = ""  # the API token that submitted it ("" from the CLI)


KEEP_OPEN = 4  # files a thread keeps a connection to (a process has one store, tests many)


class _Connections(threading.local):
    """Each thread's open connections, by database file: one is reused while that file is
    the same file (not removed and made again) in the same process."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[sqlite3.Connection, int, int]] = {}  # db, inode, pid
        self.busy: set[str] = set()

    def take(self, path: Path) -> tuple[sqlite3.Connection, bool]:
        key = str(path)
        if key in self.busy:  # a use within a use: its own connection
            return sqlite3.connect(path, timeout=30), False
        found = self.open.pop(key, None)
        if found is not None and (found[1], found[2]) != (_inode(path), os.getpid()):
            if found[2] == os.getpid():  # another process's is not this one's to close
                found[0].close()
            found = None
        if found is None:
            idle = [k for k in self.open if k not in self.busy]  # least recently used first
            for old in idle[:max(0, len(idle) - KEEP_OPEN + 1)]:
                db, _, pid = self.open.pop(old)
                if pid == os.getpid():
                    db.close()
            db = sqlite3.connect(path, timeout=30)
            found = (db, _inode(path), os.getpid())
        self.open[key] = found
        self.busy.add(key)
        return found[0], True

    def give_back(self, path: Path) -> None:
        self.busy.discard(str(path))


_CONNECTIONS = _Connections()


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or home() / "state.db"
        with self.connect() as db:
            # kept in the file: not asked again at each use (it was a third of a use's cost)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            for table, column, decl in MIGRATIONS:
                have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            self._move_templates(db)

    def _move_templates(self, db: sqlite3.Connection) -> None:
        """Before version 0.6 the template was kept here as well as in the cluster's
        directory: keep the directory's copy only."""
        if "template" not in {r[1] for r in db.execute("PRAGMA table_info(clusters)")}:
            return
        for name, text in db.execute("SELECT name, template FROM clusters").fetchall():
            cdir = ClusterDir.of(name, self.path.parent)
            if not cdir.template.exists():
                cdir.write_template(json.loads(text))
        db.execute("ALTER TABLE clusters DROP COLUMN template")

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A transaction (committed at the end, rolled back on an exception) on this
        thread's connection to the store, kept open between uses: opening and closing one
        per use was ~1 ms of CPU, 7x the transaction's own (bench/throughput.py). Nested
        uses get a connection of their own."""
        db, kept = _CONNECTIONS.take(self.path)
        try:
            with db:
                yield db
        finally:
            if kept:
                _CONNECTIONS.give_back(self.path)
            else:
                db.close()

    def put_cluster(self, name: str, provider: str, status: str, template: dict[str, Any],
                    cidr: str) -> None:
        """Record a cluster; its template goes to the one place it is kept, the cluster's
        directory (written first: a record always has its template)."""
        ClusterDir.of(name, self.path.parent).write_template(template)
        now = time.time()
        with self.connect() as db:
            db.execute(
                "INSERT INTO clusters (name, provider, status, cidr, created, updated,"
                " instance) VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                "status=excluded.status, cidr=excluded.cidr, updated=excluded.updated",
                (name, provider, status, cidr, now, now, secrets.token_hex(16)))

    def set_status(self, name: str, status: str) -> None:
        with self.connect() as db:
            db.execute("UPDATE clusters SET status=?, updated=? WHERE name=?",
                       (status, time.time(), name))

    def delete_cluster(self, name: str) -> None:
        with self.connect() as db:
            db.execute("DELETE FROM clusters WHERE name=?", (name,))
            db.execute("DELETE FROM jobs WHERE cluster=?", (name,))
            # tables of other modules
            for table in ("tokens", "containers", "grants", "policies", "submissions"):
                if db.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone():
                    db.execute(f"DELETE FROM {table} WHERE cluster=?", (name,))

    def clusters(self) -> list[ClusterRecord]:
        with self.connect() as db:
            rows = db.execute("SELECT name, provider, status, cidr, created, instance "
                              "FROM clusters ORDER BY name").fetchall()
        return [ClusterRecord(r[0], r[1], r[2], r[3], r[4], r[5], self.path.parent) for r in rows]

    def cluster(self, name: str) -> ClusterRecord | None:
        return next((c for c in self.clusters() if c.name == name), None)

    def add_job(self, cluster: str, job: JobRecord) -> None:
        with self.connect() as db:
            self.insert_job(db, cluster, job)

    @staticmethod
    def insert_job(db: sqlite3.Connection, cluster: str, job: JobRecord) -> None:
        """add_job within a transaction of the caller's."""
        db.execute("INSERT OR REPLACE INTO jobs (cluster, job_id, script, workdir, stdout, "
                       "submitted, uid, token) VALUES (?,?,?,?,?,?,?,?)",
                       (cluster, job.job_id, job.script, job.workdir, job.stdout,
                        job.submitted, job.uid, job.token))

    def job(self, cluster: str, job_id: int) -> JobRecord | None:
        with self.connect() as db:
            row = db.execute("SELECT job_id, script, workdir, stdout, submitted, uid, token "
                             "FROM jobs WHERE cluster=? AND job_id=?",
                             (cluster, job_id)).fetchone()
        return JobRecord(*row) if row else None

    def job_owners(self, cluster: str) -> dict[int, int]:
        """uid of every job cloudhpc submitted (the authority on who owns a job)."""
        with self.connect() as db:
            rows = db.execute("SELECT job_id, uid FROM jobs WHERE cluster=?", (cluster,))
            return {r[0]: r[1] for r in rows}

    def job_records(self, cluster: str, job_ids: list[int]) -> dict[int, JobRecord]:
        out: dict[int, JobRecord] = {}
        with self.connect() as db:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                        "SELECT job_id, script, workdir, stdout, submitted, uid, token FROM "
                        f"jobs WHERE cluster=? AND job_id IN ({marks})", (cluster, *chunk)):
                    out[row[0]] = JobRecord(*row)
        return out
