"""API tokens: `chpc_<id>_<secret>`; only a SHA-256 of the secret is stored (the secret is
256 random bits, so a fast hash is enough), compared in constant time. A token belongs to a
cluster and a Unix user; admins may act on every job, users only on their own."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cloudhpc.errors import CloudHPCError
from cloudhpc.state import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
  cluster TEXT NOT NULL, id TEXT NOT NULL, user TEXT NOT NULL, admin INTEGER NOT NULL,
  hash TEXT NOT NULL, created REAL NOT NULL, revoked REAL, PRIMARY KEY (cluster, id));
"""
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
TOKEN_RE = re.compile(r"^chpc_([0-9a-f]{8})_([A-Za-z0-9_-]{20,})$")


@dataclass(frozen=True)
class Principal:
    token_id: str
    user: str
    admin: bool


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

    def create(self, cluster: str, user: str, admin: bool = False) -> tuple[TokenInfo, str]:
        """A new token; the plain text is returned once and never stored."""
        if not USER_RE.match(user):
            raise CloudHPCError(f"{user!r} is not a valid Unix user name",
                                hint="use lowercase letters, digits, '-' or '_' (at most 32)")
        token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
        now = time.time()
        with self._db() as db:
            db.execute("INSERT INTO tokens VALUES (?,?,?,?,?,?,NULL)",
                       (cluster, token_id, user, int(admin), _digest(secret), now))
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
        m = TOKEN_RE.match(token)
        if not m:
            return None
        with self._db() as db:
            row = db.execute("SELECT user, admin, hash FROM tokens WHERE cluster=? AND id=? "
                             "AND revoked IS NULL", (cluster, m.group(1))).fetchone()
        if row is None or not hmac.compare_digest(row[2], _digest(m.group(2))):
            return None
        return Principal(m.group(1), row[0], bool(row[1]))
