"""cloudhpc's durable record of every submission, written before `sbatch` (its own table in
the state store). A submission has an id of cloudhpc's (`SUB`, also the name of its job
directory) that goes into Slurm with the job (its comment), so a job is known by it whatever
id Slurm gave: the reconciler recovers submissions slurmctld lost by it, and a retried API
request with the same Idempotency-Key finds the job it already made."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cloudhpc.state import JobRecord, Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
  cluster TEXT NOT NULL, sub TEXT NOT NULL, uid INTEGER NOT NULL, token TEXT NOT NULL,
  key TEXT, argv TEXT NOT NULL, created REAL NOT NULL, job_id INTEGER,
  resubmitted_as INTEGER, PRIMARY KEY (cluster, sub));
CREATE UNIQUE INDEX IF NOT EXISTS submissions_key ON submissions (cluster, token, key);
"""
KEY_LIFETIME = 24 * 3600.0  # an Idempotency-Key is remembered this long


@dataclass(frozen=True)
class Submission:
    sub: str
    uid: int
    token: str
    key: str | None
    argv: list[str]  # sbatch's options, then the batch script
    created: float
    job_id: int | None  # None until Slurm accepted it
    resubmitted_as: int | None


class KeyInUse(Exception):
    """Another submission with this Idempotency-Key exists (it may still be in flight)."""

    def __init__(self, existing: Submission) -> None:
        super().__init__(existing.sub)
        self.existing = existing


class Submissions:
    def __init__(self, db_path: Path, cluster: str) -> None:
        self._store = Store(db_path)
        self._db = self._store.connect
        self.cluster = cluster
        with self._db() as db:
            db.executescript(SCHEMA)

    def _rows(self, where: str, args: tuple[object, ...]) -> list[Submission]:
        with self._db() as db:
            rows = db.execute("SELECT sub, uid, token, key, argv, created, job_id, "
                              f"resubmitted_as FROM submissions WHERE cluster=? AND {where}",
                              (self.cluster, *args)).fetchall()
        return [Submission(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7])
                for r in rows]

    def record(self, sub: str, uid: int, token: str, key: str | None,
               argv: list[str]) -> None:
        """Before sbatch. Raises KeyInUse when the token used KEY within its lifetime."""
        now = time.time()
        with self._db() as db:
            if key is not None:  # an expired key may be used again
                db.execute("DELETE FROM submissions WHERE cluster=? AND token=? AND key=? "
                           "AND created<?", (self.cluster, token, key, now - KEY_LIFETIME))
            try:
                db.execute("INSERT INTO submissions (cluster, sub, uid, token, key, argv, "
                           "created) VALUES (?,?,?,?,?,?,?)",
                           (self.cluster, sub, uid, token, key, json.dumps(argv), now))
            except sqlite3.IntegrityError:
                existing = self.by_key(token, key) if key is not None else None
                if existing is None:
                    raise
                raise KeyInUse(existing) from None

    def accepted(self, sub: str, job_id: int, job: JobRecord | None = None) -> None:
        """Slurm took SUB as JOB_ID; with JOB, cloudhpc's record of the job is made in the
        same transaction."""
        with self._db() as db:
            db.execute("UPDATE submissions SET job_id=? WHERE cluster=? AND sub=?",
                       (job_id, self.cluster, sub))
            if job is not None:
                self._store.insert_job(db, self.cluster, job)

    def forget(self, sub: str) -> None:
        """Slurm refused it: the same key may be tried again."""
        with self._db() as db:
            db.execute("DELETE FROM submissions WHERE cluster=? AND sub=?", (self.cluster, sub))

    def resubmitted(self, sub: str, job_id: int) -> None:
        with self._db() as db:
            db.execute("UPDATE submissions SET resubmitted_as=? WHERE cluster=? AND sub=?",
                       (job_id, self.cluster, sub))

    def by_key(self, token: str, key: str) -> Submission | None:
        found = self._rows("token=? AND key=? AND created>=?",
                           (token, key, time.time() - KEY_LIFETIME))
        return found[0] if found else None

    def get(self, sub: str) -> Submission | None:
        found = self._rows("sub=?", (sub,))
        return found[0] if found else None

    def since(self, when: float) -> list[Submission]:
        return self._rows("created>=? ORDER BY created", (when,))

    def by_job(self, job_id: int) -> Submission | None:
        found = self._rows("job_id=?", (job_id,))
        return found[0] if found else None
