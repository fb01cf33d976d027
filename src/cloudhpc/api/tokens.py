"""API tokens: `chpc_<id>_<secret>`; only a SHA-256 of the secret is stored (the secret is
256 random bits, so a fast hash is enough), compared in constant time. A token belongs to one
instance of a cluster (an id made at each `up`: a token of a removed cluster never works on a
new one of the same name, and `down` deletes them) and to an ordinary Unix user; admins may
act on every job, users only on their own. No token runs jobs as root or a system account."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudhpc.jobs.users import check_ordinary
from cloudhpc.state import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
  cluster TEXT NOT NULL, id TEXT NOT NULL, user TEXT NOT NULL, admin INTEGER NOT NULL,
  hash TEXT NOT NULL, created REAL NOT NULL, revoked REAL, PRIMARY KEY (cluster, id));
"""
TOKEN_RE = re.compile(r"chpc_([0-9a-f]{8})_([A-Za-z0-9_-]{20,200})")


@dataclass(frozen=True)
class Principal:
    token_id: str
    user: str
    admin: bool
    uid: int = -2  # the user's uid once it exists (-2 matches no job)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user: str
    admin: bool
    created: float
    revoked: float | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Tokens in the state store's database (its own table)."""

    def __init__(self, db_path: Path) -> None:
        self._db = Store(db_path).connect
        with self._db() as db:
            db.executescript(SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(tokens)")}
            if "instance" not in have:
                db.execute("ALTER TABLE tokens ADD COLUMN instance TEXT NOT NULL DEFAULT ''")

    def _instance(self, db: Any, cluster: str) -> str | None:
        row = db.execute("SELECT instance FROM clusters WHERE name=?", (cluster,)).fetchone()
        return str(row[0]) if row else None

    def create(self, cluster: str, user: str, admin: bool = False) -> tuple[TokenInfo, str]:
        """A new token; the plain text is returned once and never stored."""
        check_ordinary(user)
        token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
        now = time.time()
        with self._db() as db:
            instance = self._instance(db, cluster) or ""
            db.execute("INSERT INTO tokens (cluster, id, user, admin, hash, created, revoked, "
                       "instance) VALUES (?,?,?,?,?,?,NULL,?)",
                       (cluster, token_id, user, int(admin), _digest(secret), now, instance))
        return TokenInfo(token_id, user, admin, now, None), f"chpc_{token_id}_{secret}"

    def list(self, cluster: str) -> list[TokenInfo]:
        with self._db() as db:
            rows = db.execute("SELECT id, user, admin, created, revoked FROM tokens WHERE "
                              "cluster=? ORDER BY created", (cluster,)).fetchall()
        return [TokenInfo(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]

    def revoke(self, cluster: str, token_id: str) -> bool:
        with self._db() as db:
            cur = db.execute("UPDATE tokens SET revoked=? WHERE cluster=? AND id=? AND "
                             "revoked IS NULL", (time.time(), cluster, token_id))
        return cur.rowcount > 0

    def verify(self, cluster: str, token: str) -> Principal | None:
        m = TOKEN_RE.fullmatch(token)
        if not m:
            return None
        with self._db() as db:
            row = db.execute("SELECT user, admin, hash, instance FROM tokens WHERE cluster=? "
                             "AND id=? AND revoked IS NULL", (cluster, m.group(1))).fetchone()
            instance = self._instance(db, cluster)
        if row is None or not hmac.compare_digest(row[2], _digest(m.group(2))):
            return None
        if instance is None or row[3] != instance:  # a token of an earlier cluster's instance
            return None
        return Principal(m.group(1), row[0], bool(row[1]))
