"""`--remote URL --token T [--fingerprint F]` (or CLOUDHPC_REMOTE / CLOUDHPC_TOKEN /
CLOUDHPC_FINGERPRINT, or the file ~/.config/cloudhpc/remote.json with {"url": ...,
"token": ..., "fingerprint": ...}): job and status commands go through a cluster's REST API
instead of this machine's state. The API's certificate is trusted from this machine's state
directory (root, next to the cluster) or by the fingerprint `token create` printed. Also the
token commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from cloudhpc.api.client import RemoteCluster
from cloudhpc.cli.output import emit_json, out, table
from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError

CONFIG = Path("~/.config/cloudhpc/remote.json")
_settings: dict[str, str | None] = {"url": None, "token": None, "fingerprint": None}

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
ClusterOpt = Annotated[str | None, typer.Option("-c", "--cluster",  # noqa: UP007
                                                   help="cluster name (optional if only one)")]


def configure(url: str | None, token: str | None, fingerprint: str | None = None) -> None:
    _settings["url"] = url or os.environ.get("CLOUDHPC_REMOTE")
    _settings["token"] = token or os.environ.get("CLOUDHPC_TOKEN")
    _settings["fingerprint"] = fingerprint or os.environ.get("CLOUDHPC_FINGERPRINT")
    path = CONFIG.expanduser()
    try:
        configured = not _settings["url"] and path.is_file()
    except OSError:  # e.g. another user's home we may not read
        configured = False
    if configured:
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            raise CloudHPCError(f"{path} is not valid JSON",
                                hint='write {"url": "http://HEAD:8443", "token": "chpc_..."}'
                                ) from None
        _settings["url"], _settings["token"] = saved.get("url"), saved.get("token")
        _settings["fingerprint"] = saved.get("fingerprint")


def remote() -> RemoteCluster | None:
    if not _settings["url"]:
        return None
    if not _settings["token"]:
        raise CloudHPCError("--remote needs a token",
                            hint="pass --token, or set CLOUDHPC_TOKEN")
    from cloudhpc.api.client import RemoteCluster

    return RemoteCluster(str(_settings["url"]), str(_settings["token"]),
                         fingerprint=_settings["fingerprint"])


def target(cluster: str | None) -> Cluster | RemoteCluster:
    """The remote cluster when one is configured, else a cluster of this machine."""
    from cloudhpc.cluster import Cluster

    return remote() or Cluster.get(cluster)


tokens = typer.Typer(help="API tokens of a cluster: create, list, revoke.",
                     no_args_is_help=True)


@tokens.command("create")
def token_create(user: Annotated[str, typer.Option(help="Unix user the token acts as")],
                 admin: Annotated[bool, typer.Option(help="may act on every job")] = False,
                 cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """Create a token (shown once; only its hash is kept)."""
    from cloudhpc.api.tls import fingerprint
    from cloudhpc.api.tokens import TokenStore
    from cloudhpc.cluster import Cluster

    c = Cluster.get(cluster)
    info, secret = TokenStore(c.store.path).create(c.name, user, admin)
    association = c.give_association(user)  # Slurm accounting: the user's account
    url = c.plan.api_url
    pin = fingerprint(c.dir.api_cert.read_text()) if c.dir.api_cert.exists() else ""
    if as_json:
        emit_json({"id": info.id, "user": user, "admin": admin, "token": secret, "url": url,
                   "fingerprint": pin, "account": association})
        return
    out.print(f"token {info.id} for {user}{' (admin)' if admin else ''}: {secret}",
              highlight=False, soft_wrap=True)
    if association:
        out.print(f"Slurm account of {user}: {association}", highlight=False)
    if pin:
        out.print(f"API certificate SHA-256 fingerprint: {pin}", highlight=False,
                  soft_wrap=True)
    flag = f" --fingerprint {pin}" if pin else ""
    out.print(f"use it: cloudhpc --remote {url} --token {secret}{flag} jobs   "
              f"(dashboard: {url}/)", highlight=False, soft_wrap=True)


@tokens.command("list")
def token_list(cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """Tokens of a cluster (never their secrets)."""
    from cloudhpc.api.tokens import TokenStore
    from cloudhpc.cluster import Cluster

    c = Cluster.get(cluster)
    found = TokenStore(c.store.path).list(c.name)
    if as_json:
        emit_json([t.__dict__ for t in found])
        return
    table(f"tokens of {c.name}", ["id", "user", "admin", "created", "revoked"],
          [(t.id, t.user, "yes" if t.admin else "", time.strftime(
              "%Y-%m-%d %H:%M", time.localtime(t.created)),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(t.revoked)) if t.revoked else "")
           for t in found])


@tokens.command("revoke")
def token_revoke(token_id: str, cluster: ClusterOpt = None) -> None:
    """Revoke a token at once."""
    from cloudhpc.api.tokens import TokenStore
    from cloudhpc.cluster import Cluster

    c = Cluster.get(cluster)
    if not TokenStore(c.store.path).revoke(c.name, token_id):
        raise CloudHPCError(f"no active token {token_id!r} in cluster {c.name}",
                            hint="see `cloudhpc token list`")
    if c.plan.blob:  # its jobs' blob tokens stop working too
        from cloudhpc.storage.access import revoke_token_access

        revoke_token_access(c, token_id)
    out.print(f"token {token_id} revoked")
