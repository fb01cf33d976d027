"""Cluster state store: SQLite under the state directory (one file for all clusters)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudhpc.paths import home

SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (
  name TEXT PRIMARY KEY, provider TEXT NOT NULL, status TEXT NOT NULL,
  template TEXT NOT NULL, cidr TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  cluster TEXT NOT NULL, job_id INTEGER NOT NULL, script TEXT NOT NULL, workdir TEXT NOT NULL,
  stdout TEXT NOT NULL, submitted REAL NOT NULL, PRIMARY KEY (cluster, job_id));
"""


@dataclass(frozen=True)
class ClusterRecord:
    name: str
    provider: str
    status: str
    template: dict[str, Any]
    cidr: str
    created: float


@dataclass(frozen=True)
class JobRecord:
    job_id: int
    script: str
    workdir: str
    stdout: str
    submitted: float


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or home() / "state.db"
        with self.connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        finally:
            db.close()

    def put_cluster(self, name: str, provider: str, status: str, template: dict[str, Any],
                    cidr: str) -> None:
        now = time.time()
        with self.connect() as db:
            db.execute(
                "INSERT INTO clusters VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                "status=excluded.status, template=excluded.template, cidr=excluded.cidr, "
                "updated=excluded.updated",
                (name, provider, status, json.dumps(template), cidr, now, now))

    def set_status(self, name: str, status: str) -> None:
        with self.connect() as db:
            db.execute("UPDATE clusters SET status=?, updated=? WHERE name=?",
                       (status, time.time(), name))

    def delete_cluster(self, name: str) -> None:
        with self.connect() as db:
            db.execute("DELETE FROM clusters WHERE name=?", (name,))
            db.execute("DELETE FROM jobs WHERE cluster=?", (name,))

    def clusters(self) -> list[ClusterRecord]:
        with self.connect() as db:
            rows = db.execute("SELECT name, provider, status, template, cidr, created "
                              "FROM clusters ORDER BY name").fetchall()
        return [ClusterRecord(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    def cluster(self, name: str) -> ClusterRecord | None:
        return next((c for c in self.clusters() if c.name == name), None)

    def add_job(self, cluster: str, job: JobRecord) -> None:
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?)",
                       (cluster, job.job_id, job.script, job.workdir, job.stdout, job.submitted))

    def job(self, cluster: str, job_id: int) -> JobRecord | None:
        with self.connect() as db:
            row = db.execute("SELECT job_id, script, workdir, stdout, submitted FROM jobs "
                             "WHERE cluster=? AND job_id=?", (cluster, job_id)).fetchone()
        return JobRecord(*row) if row else None
