"""Blob storage commands: ls, put, get, rm, mkdir (the cluster's blob store)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudhpc.cli.output import emit_json, err, out, table
from cloudhpc.cluster import Cluster
from cloudhpc.storage.urls import parse_blob_url

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
ClusterOpt = Annotated[str | None, typer.Option("-c", "--cluster",  # noqa: UP007
                                                   help="cluster name (optional if only one)")]

storage = typer.Typer(help="The cluster's blob store: list, upload, download, delete.",
                      no_args_is_help=True)


def _local_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextmanager
def _bar(label: str, total: int | None, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A transfer progress bar on stderr; yields the callback the blob store feeds."""
    if quiet:
        yield lambda n: None
        return
    lock = threading.Lock()
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)

        def advance(n: int) -> None:
            with lock:
                progress.advance(task, n)

        yield advance


@storage.command("ls")
def ls(url: Annotated[str | None, typer.Argument(help="blob://CONTAINER[/PATH]")] = None,
       cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """List containers, or the blobs in a container or below a path."""
    store = Cluster.get(cluster).storage
    if url is None:
        names = store.containers()
        if as_json:
            emit_json(names)
        else:
            table("containers", ["container"], [(n,) for n in names])
        return
    entries = store.ls(parse_blob_url(url))
    if as_json:
        emit_json([e.__dict__ for e in entries])
        return
    table(url, ["blob", "bytes", "modified", "sha256"],
          [(e.name, e.size, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.modified)),
            e.sha256[:12]) for e in entries])


@storage.command("put")
def put(local: Path, url: str, cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """Upload a file or a directory (recursively) to blob://CONTAINER/PATH."""
    store = Cluster.get(cluster).storage
    target = parse_blob_url(url)
    began = time.monotonic()
    with _bar(f"put {local.name}", _local_size(local) if local.exists() else None,
              as_json) as advance:
        entries = store.put(local, target, advance)
    seconds = time.monotonic() - began
    size = sum(e.size for e in entries)
    if as_json:
        emit_json({"blobs": [e.__dict__ for e in entries], "bytes": size,
                   "seconds": round(seconds, 3)})
    else:
        out.print(f"stored {len(entries)} blob(s), {size} bytes in {seconds:.1f} s "
                  f"(sha256 recorded)")


@storage.command("get")
def get(url: str, local: Path, cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """Download a blob, or everything below a path into a directory; checksums verified."""
    store = Cluster.get(cluster).storage
    source = parse_blob_url(url)
    total = sum(e.size for e in store.ls(source))
    began = time.monotonic()
    with _bar(f"get {url}", total, as_json) as advance:
        files = store.get(source, local, advance)
    seconds = time.monotonic() - began
    if as_json:
        emit_json({"files": [str(f) for f in files], "bytes": total,
                   "seconds": round(seconds, 3)})
    else:
        out.print(f"fetched {len(files)} file(s), {total} bytes in {seconds:.1f} s "
                  "(checksums verified)")


@storage.command("rm")
def rm(url: str, recursive: Annotated[bool, typer.Option("--recursive", "-r",
                                                         help="everything below URL")] = False,
       cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a blob (or, with -r, a folder or a whole container)."""
    count = Cluster.get(cluster).storage.rm(parse_blob_url(url), recursive)
    if as_json:
        emit_json({"deleted": count})
    else:
        out.print(f"deleted {count} blob(s)")


@storage.command("mkdir")
def mkdir(container: str, cluster: ClusterOpt = None, as_json: JsonOpt = False,
          owner: Annotated[str, typer.Option(help="user who owns it (default root: admins "
                                             "only)")] = "root",
          public: Annotated[bool, typer.Option(help="every user of the cluster may read "
                                               "it")] = False) -> None:
    """Create a container (owned by OWNER; others reach it only through grants)."""
    from cloudhpc.jobs.users import check_name
    from cloudhpc.storage.access import ROOT, ContainerAccess

    name = parse_blob_url(f"blob://{container}", what="container").container
    check_name(owner)
    c = Cluster.get(cluster)
    created = c.storage.mkdir(name)
    access = ContainerAccess(c.store, c.name)
    access.record(name, owner)
    if public:
        access.grant(ROOT, name, "*", False)
    if as_json:
        emit_json({"container": name, "created": created, "owner": access.owner(name)})
    else:
        out.print(f"container {name} {'created' if created else 'exists already'} "
                  f"(owner {access.owner(name)})")


@storage.command("grant")
def grant(container: str, user: Annotated[str, typer.Argument(help="a user, or '*' for "
                                                              "every user")],
          write: Annotated[bool, typer.Option(help="may also write")] = False,
          cluster: ClusterOpt = None) -> None:
    """Share a container with a user (read, or read and write)."""
    from cloudhpc.jobs.users import check_name
    from cloudhpc.storage.access import ROOT, ContainerAccess

    if user != "*":
        check_name(user)
    c = Cluster.get(cluster)
    ContainerAccess(c.store, c.name).grant(ROOT, container, user, write)
    out.print(f"{user} may {'read and write' if write else 'read'} container {container}")


def register(app: typer.Typer) -> None:
    app.add_typer(storage, name="storage")
