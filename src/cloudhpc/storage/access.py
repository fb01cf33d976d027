"""Who may use which blob container, and the tokens a job gets for exactly its blobs.

Every container has an owner (the user who made it; `root` for containers made on this
machine with the CLI) and explicit grants (a user, or `*` for every user of the cluster, with
read or read+write). Admin tokens and root reach every container; a user token reaches its
own, granted and public ones only. A container cloudhpc has no record of (made behind its
back) is an admin's only.

A job of a user gets one SAS per blob it stages: read for each stage-in blob, create+write
for each stage-out name (a stage-out folder, whose names are not known at submission, gets
create+write on its container, which the user must be allowed to write). Each SAS expires
with the job (its time limit, or 24 h without one, plus an hour) and is bound to a stored
access policy of the container named after the submitting token: revoking the token removes
its policies, and every SAS of its jobs stops working at once. Azure allows five stored
access policies per container (https://learn.microsoft.com/rest/api/storageservices/
define-stored-access-policy); policies of revoked tokens are pruned when room is needed.

On Azure the head has no account key (the account refuses Shared Key): it signs each SAS with
a user delegation key it gets with its managed identity, and a user delegation SAS cannot be
bound to a stored access policy (https://learn.microsoft.com/rest/api/storageservices/
create-user-delegation-sas). Such a SAS carries its permissions itself and lives as long as
the job (at most the seven days a delegation key lives); revoking a token does not cut its
running jobs' SAS short there — they end with the job."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudhpc.errors import CloudHPCError
from cloudhpc.state import Store
from cloudhpc.storage.blob import BlobStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
  cluster TEXT NOT NULL, name TEXT NOT NULL, owner TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (cluster, name));
CREATE TABLE IF NOT EXISTS grants (
  cluster TEXT NOT NULL, container TEXT NOT NULL, user TEXT NOT NULL, write INTEGER NOT NULL,
  PRIMARY KEY (cluster, container, user));
"""
EVERYONE = "*"
MAX_POLICIES = 5
MARGIN = timedelta(hours=1)
NO_LIMIT = timedelta(hours=24)
MAX_DELEGATION = timedelta(days=7)  # a user delegation key's longest life


class AccessDenied(CloudHPCError):
    """A user asked for a container that is not theirs."""


@dataclass(frozen=True)
class Who:
    user: str
    admin: bool = False

    @property
    def root(self) -> bool:
        return self.admin or self.user == "root"


ROOT = Who("root", True)


class ContainerAccess:
    def __init__(self, store: Store, cluster: str) -> None:
        self.db = store.connect
        self.cluster = cluster
        with self.db() as db:
            db.executescript(SCHEMA)

    def live_tokens(self) -> set[str]:
        """Ids of the cluster's tokens not revoked (their access policies are kept)."""
        with self.db() as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name='tokens'").fetchone():
                return set()
            rows = db.execute("SELECT id FROM tokens WHERE cluster=? AND revoked IS NULL",
                              (self.cluster,)).fetchall()
        return {r[0] for r in rows}

    def record(self, name: str, owner: str) -> None:
        with self.db() as db:
            db.execute("INSERT OR IGNORE INTO containers VALUES (?,?,?,?)",
                       (self.cluster, name, owner, time.time()))

    def owner(self, name: str) -> str | None:
        with self.db() as db:
            row = db.execute("SELECT owner FROM containers WHERE cluster=? AND name=?",
                             (self.cluster, name)).fetchone()
        return str(row[0]) if row else None

    def grant(self, who: Who, name: str, user: str, write: bool) -> None:
        if not (who.root or self.owner(name) == who.user):
            raise AccessDenied(f"container '{name}' is not yours to share",
                               hint="ask its owner or an admin")
        if self.owner(name) is None:
            self.record(name, "root")
        with self.db() as db:
            db.execute("INSERT OR REPLACE INTO grants VALUES (?,?,?,?)",
                       (self.cluster, name, user, int(write)))

    def _grants(self, name: str) -> dict[str, bool]:
        with self.db() as db:
            rows = db.execute("SELECT user, write FROM grants WHERE cluster=? AND container=?",
                              (self.cluster, name)).fetchall()
        return {r[0]: bool(r[1]) for r in rows}

    def can_read(self, who: Who, name: str) -> bool:
        if who.root or self.owner(name) == who.user:
            return True
        grants = self._grants(name)
        return who.user in grants or EVERYONE in grants

    def can_write(self, who: Who, name: str) -> bool:
        if who.root or self.owner(name) == who.user:
            return True
        grants = self._grants(name)
        return grants.get(who.user, False) or grants.get(EVERYONE, False)

    def visible(self, who: Who, names: list[str]) -> list[str]:
        return [n for n in names if self.can_read(who, n)]

    def check(self, who: Who, name: str, write: bool, what: str) -> None:
        allowed = self.can_write(who, name) if write else self.can_read(who, name)
        if not allowed:
            raise AccessDenied(f"{what}: container '{name}' is not yours"
                               + (" to write" if write else ""),
                               hint="use a container you made (POST /api/storage/containers) "
                               "or one shared with you")


def _policy_id(token: str, write: bool) -> str:
    return f"{token or 'cli'}-{'w' if write else 'r'}"


def _ensure_policy(blob: BlobStore, container: str, token: str, write: bool,
                   live: set[str]) -> str:
    """The container's stored access policy for TOKEN's reads or writes (made if missing;
    policies of tokens no longer live are pruned when all five places are taken)."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import AccessPolicy

    pid = _policy_id(token, write)
    client = blob.service.get_container_client(container)
    try:
        current = {p.id: p.access_policy for p in
                   client.get_container_access_policy()["signed_identifiers"]}
        if pid in current:
            return pid
        if len(current) >= MAX_POLICIES:
            current = {k: v for k, v in current.items() if k.rsplit("-", 1)[0] in live}
        if len(current) >= MAX_POLICIES:
            raise CloudHPCError(f"container '{container}' is staged by five tokens' jobs "
                                "already (Azure keeps five access policies per container)",
                                hint="use another container, or revoke unused tokens")
        current[pid] = AccessPolicy(permission="cw" if write else "r")
        client.set_container_access_policy(current)
    except AzureError as exc:
        raise blob._fail("setting the access policy of", f"blob://{container}", exc) from None
    return pid


def job_sas(blob: BlobStore, token: str, live_tokens: set[str], reads: list[str],
            writes: list[str], write_containers: list[str],
            time_limit_minutes: int | None) -> dict[str, str]:
    """blob:// address (a blob, or a bare container for folder stage-outs) -> SAS."""
    from azure.storage.blob import generate_blob_sas, generate_container_sas

    from cloudhpc.storage.urls import parse_blob_url

    lifetime = timedelta(minutes=time_limit_minutes) if time_limit_minutes else NO_LIMIT
    expiry = datetime.now(UTC) + lifetime + MARGIN
    if blob.account.identity:
        return _delegated_sas(blob, reads, writes, write_containers, expiry)
    account, key = blob.account.account, blob.account.key
    out: dict[str, str] = {}
    live = live_tokens | {token}
    for address, write in [(a, False) for a in reads] + [(a, True) for a in writes]:
        url = parse_blob_url(address)
        pid = _ensure_policy(blob, url.container, token, write, live)
        out[address] = generate_blob_sas(account, url.container, url.path, account_key=key,
                                         policy_id=pid, expiry=expiry)
    for container in write_containers:
        pid = _ensure_policy(blob, container, token, True, live)
        out[f"blob://{container}"] = generate_container_sas(
            account, container, account_key=key, policy_id=pid, expiry=expiry)
    return out


def _delegated_sas(blob: BlobStore, reads: list[str], writes: list[str],
                   write_containers: list[str], expiry: datetime) -> dict[str, str]:
    """User delegation SAS (Azure, no account key): read for READS, create+write for WRITES
    and WRITE_CONTAINERS, signed with a delegation key of the head's managed identity."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import (
        BlobSasPermissions,
        ContainerSasPermissions,
        generate_blob_sas,
        generate_container_sas,
    )

    from cloudhpc.storage.urls import parse_blob_url

    now = datetime.now(UTC)
    expiry = min(expiry, now + MAX_DELEGATION)
    try:
        key = blob.service.get_user_delegation_key(now - timedelta(minutes=5), expiry)
    except AzureError as exc:
        raise blob._fail("getting a user delegation key for", blob.account.endpoint,
                         exc) from None
    account = blob.account.account
    out: dict[str, str] = {}
    for address, write in [(a, False) for a in reads] + [(a, True) for a in writes]:
        url = parse_blob_url(address)
        permission = BlobSasPermissions(create=True, write=True) if write else \
            BlobSasPermissions(read=True)
        out[address] = generate_blob_sas(account, url.container, url.path,
                                         user_delegation_key=key, permission=permission,
                                         expiry=expiry)
    for container in write_containers:
        out[f"blob://{container}"] = generate_container_sas(
            account, container, user_delegation_key=key,
            permission=ContainerSasPermissions(create=True, write=True), expiry=expiry)
    return out


def revoke_token_access(cluster: Any, token: str) -> int:
    """Remove TOKEN's access policies from every container: its jobs' SAS stop working.
    Returns how many policies went."""
    from azure.core.exceptions import AzureError

    blob = cluster.storage
    if blob.account.identity:  # user delegation SAS: no policy to remove (see above)
        return 0
    removed = 0
    try:
        for name in blob.containers():
            client = blob.service.get_container_client(name)
            ids = client.get_container_access_policy()["signed_identifiers"]
            keep = {p.id: p.access_policy for p in ids
                    if p.id not in (_policy_id(token, True), _policy_id(token, False))}
            if len(keep) != len(ids):
                client.set_container_access_policy(keep)
                removed += len(ids) - len(keep)
    except AzureError as exc:
        raise blob._fail("revoking blob access of token", token, exc) from None
    return removed
