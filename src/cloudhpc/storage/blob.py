"""The cluster's blob store through the real azure-storage-blob client: list, put, get, rm
with parallel block transfers and SHA-256 checksums verified end to end (computed where the
data is read, stored as blob metadata, checked where it is written back)."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudhpc.errors import StorageError
from cloudhpc.storage.account import BlobAccount
from cloudhpc.storage.urls import BlobURL, local_relative


class _Lazy:
    """A module imported at its first use: azure-storage-blob and azure-core take 0.4 s of
    CPU to import, paid otherwise by every cloudhpc process (the CLI, the API and its
    workers, the reconciler) whether it touches blobs or not."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


errors = _Lazy("azure.core.exceptions")  # `except errors.X` looks X up only on a failure
sdk = _Lazy("azure.storage.blob")

BLOCK = 8 * 1024 * 1024
CONCURRENCY = 4  # parallel block transfers per large blob
FILES_IN_PARALLEL = 8  # small blobs moved at once
SYNC_DIR = "cloudhpc-sync"  # beside Azurite's databases (azurite_durable.js)
SYNC_WAIT = 10  # seconds a change may wait for the store to save it
Progress = Callable[[int], None]  # called with the number of bytes just moved


@dataclass(frozen=True)
class Entry:
    name: str  # blob:// address
    size: int
    modified: float
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in sorted(names):
            yield Path(dirpath) / name


class BlobStore:
    """Operations on one cluster's blob store; every failure is a StorageError."""

    def __init__(self, account: BlobAccount, *, retries: int = 4,
                 sas: dict[str, str] | None = None) -> None:
        """With SAS (blob:// address of a blob, or of a bare container -> token), the store
        reaches only those blobs and needs no account key: what a job of a user gets
        (cloudhpc.storage.access)."""
        self.account = account
        self.sas = sas
        self._options: dict[str, Any] = dict(
            retry_policy=sdk.ExponentialRetry(initial_backoff=1, increment_base=2,
                                          retry_total=retries),
            connection_timeout=5, read_timeout=60, max_block_size=BLOCK,
            max_single_put_size=BLOCK)
        credential: Any = None
        if account.key:
            credential = {"account_name": account.account, "account_key": account.key}
        elif account.identity and sas is None:
            from azure.identity import ManagedIdentityCredential

            credential = ManagedIdentityCredential()
        self.service = sdk.BlobServiceClient(account.endpoint, credential=credential,
                                         **self._options)

    # -- helpers -------------------------------------------------------------------------
    def _container(self, url: BlobURL) -> Any:  # azure.storage.blob.ContainerClient
        if self.sas is None:
            return self.service.get_container_client(url.container)
        token = self.sas.get(str(url)) or self.sas.get(f"blob://{url.container}")
        if token is None:
            raise StorageError(f"this job has no access to {url}",
                               hint="name it in --stage-in/--stage-out/--exe")
        return sdk.ContainerClient(self.account.endpoint, url.container, credential=token,
                                   **self._options)

    def _fail(self, what: str, url: BlobURL | str, exc: Exception) -> StorageError:
        if isinstance(exc, errors.ServiceRequestError):
            return StorageError(f"{what} {url}: the blob store at {self.account.endpoint} "
                                "does not answer",
                                hint="check the storage node with `cloudhpc status`")
        if isinstance(exc, errors.ResourceNotFoundError):
            if getattr(exc, "error_code", "") == "ContainerNotFound":
                return StorageError(f"{what} {url}: its container does not exist",
                                    hint="create it with `cloudhpc storage mkdir CONTAINER`")
            return StorageError(f"{what} {url}: no such blob",
                                hint="list what exists with `cloudhpc storage ls`")
        message = getattr(exc, "message", None) or str(exc)
        return StorageError(f"{what} {url} failed: {message.splitlines()[0]}")

    @contextmanager
    def durable(self) -> Iterator[None]:
        """Around a change: once it has been answered, wait until the store has saved it.
        Azurite saves its metadata when asked (azurite_durable.js: a request file in
        SYNC_DIR, renamed when a save begun after it has been written), so a crash after
        this loses nothing acknowledged. A restart of Azurite between the change and the
        save (another `instance`) is an error: the change may have been lost with it."""
        if not self.account.saved_state:
            yield
            return
        sync = Path(self.account.saved_state).parent / SYNC_DIR
        before = _read(sync / "instance")
        yield
        name = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
        req, done, lost = (sync / f"{name}.{end}" for end in ("req", "done", "lost"))
        try:
            req.open("x").close()
        except OSError as exc:
            raise StorageError(f"the blob store's save requests ({sync}) cannot be "
                               f"written: {exc.strerror}",
                               hint="check the storage node with `cloudhpc status`") from None
        deadline, pause = time.monotonic() + SYNC_WAIT, 0.002
        while time.monotonic() < deadline:
            if done.exists() or lost.exists():
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            req.unlink(missing_ok=True)
            raise StorageError(f"the blob store at {self.account.endpoint} did not save the "
                               f"last write within {SYNC_WAIT} s", hint="check the storage "
                               "node's azurite.log; run the transfer again")
        saved = done.exists()
        done.unlink(missing_ok=True)
        lost.unlink(missing_ok=True)
        if not saved or (before is not None and _read(sync / "instance") != before):
            raise StorageError(f"the blob store at {self.account.endpoint} restarted before "
                               "it saved the last write, which may be lost",
                               hint="run the transfer again")

    # -- queries -------------------------------------------------------------------------
    def containers(self) -> list[str]:
        try:
            return [c.name for c in self.service.list_containers()]
        except errors.AzureError as exc:
            raise self._fail("listing containers of", self.account.endpoint, exc) from None

    def container_exists(self, name: str) -> bool:
        try:
            return bool(self.service.get_container_client(name).exists())
        except errors.AzureError as exc:
            raise self._fail("checking container", f"blob://{name}", exc) from None

    def ls(self, url: BlobURL) -> list[Entry]:
        """Blobs at URL: the blob itself, or every blob below it as a folder."""
        prefix = url.path
        if self.sas is not None and str(url) in self.sas:  # one blob, no listing right
            try:
                props = self._container(url).get_blob_client(url.path).get_blob_properties()
            except errors.ResourceNotFoundError:
                return []
            except errors.AzureError as exc:
                raise self._fail("reading", url, exc) from None
            return [Entry(str(url), props.size, props.last_modified.timestamp(),
                          (props.metadata or {}).get("sha256", ""))]
        try:
            out = []
            for b in self._container(url).list_blobs(name_starts_with=prefix or None,
                                                     include=["metadata"]):
                if prefix and b.name != prefix and not b.name.startswith(prefix + "/"):
                    continue
                out.append(Entry(str(BlobURL(url.container, b.name)), b.size,
                                 b.last_modified.timestamp(),
                                 (b.metadata or {}).get("sha256", "")))
            return out
        except errors.AzureError as exc:
            raise self._fail("listing", url, exc) from None

    def exists(self, url: BlobURL) -> bool:
        """True when URL names a blob or a folder holding blobs."""
        return bool(self.ls(url))

    # -- changes -------------------------------------------------------------------------
    def mkdir(self, container: str) -> bool:
        """Create a container; False when it existed already."""
        try:
            with self.durable():
                self.service.create_container(container)
            return True
        except errors.ResourceExistsError:
            return False
        except errors.AzureError as exc:
            raise self._fail("creating container", f"blob://{container}", exc) from None

    def put(self, local: Path, url: BlobURL, progress: Progress | None = None,
            create: bool = True) -> list[Entry]:
        """Upload a file (to URL, or URL/NAME when URL is a container) or a directory
        (each file below URL). Returns what was stored."""
        if not local.exists():
            raise StorageError(f"nothing to upload at {local}", hint="check the local path")
        if create:
            self.mkdir(url.container)
        with self.durable():
            return self._put(local, url, progress)

    def _put(self, local: Path, url: BlobURL, progress: Progress | None) -> list[Entry]:
        if local.is_file():
            target = url if url.path else url.child(local.name)
            stored = [self._put_file(local, target, progress)]
        else:
            pairs = [(f, url.child(f.relative_to(local).as_posix())) for f in _files(local)]
            with ThreadPoolExecutor(FILES_IN_PARALLEL) as pool:
                stored = list(pool.map(lambda p: self._put_file(p[0], p[1], progress),
                                       pairs))
        return stored

    def _put_file(self, path: Path, url: BlobURL, progress: Progress | None) -> Entry:
        sha = _sha256(path)
        size = path.stat().st_size
        hook = _hook(progress)
        try:
            with open(path, "rb") as fh:
                self._container(url).upload_blob(
                    url.path, fh, length=size, overwrite=True, metadata={"sha256": sha},
                    max_concurrency=CONCURRENCY, progress_hook=hook)
        except errors.AzureError as exc:
            raise self._fail("uploading to", url, exc) from None
        return Entry(str(url), size, path.stat().st_mtime, sha)

    def get(self, url: BlobURL, local: Path, progress: Progress | None = None) -> list[Path]:
        """Download a blob to LOCAL (a file, or LOCAL/NAME when LOCAL is a directory), or
        every blob below a folder URL into the directory LOCAL. Each file's SHA-256 is
        checked against the one recorded at upload; a mismatch removes the file."""
        entries = self.ls(url)
        if not entries:
            raise StorageError(f"nothing at {url}",
                               hint="list what exists with `cloudhpc storage ls`")
        single = len(entries) == 1 and entries[0].name == str(url)
        if single:
            name = local_relative(Path(url.path).name) if local.is_dir() else ""
            target = local / name if name else local
            return [self._get_file(url, entries[0], target, progress)]
        jobs = []
        for e in entries:
            rel = local_relative(e.name[len(str(url)) + 1:])
            jobs.append((BlobURL(url.container, e.name.split("/", 3)[3]), e, local / rel))
        with ThreadPoolExecutor(FILES_IN_PARALLEL) as pool:
            return list(pool.map(lambda j: self._get_file(j[0], j[1], j[2], progress), jobs))

    def _get_file(self, url: BlobURL, entry: Entry, target: Path,
                  progress: Progress | None) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        try:
            with open(partial, "wb") as fh:
                self._container(url).download_blob(
                    url.path, max_concurrency=CONCURRENCY,
                    progress_hook=_hook(progress)).readinto(fh)
        except errors.AzureError as exc:
            partial.unlink(missing_ok=True)
            raise self._fail("downloading", url, exc) from None
        if entry.sha256 and _sha256(partial) != entry.sha256:
            partial.unlink(missing_ok=True)
            raise StorageError(f"downloading {url}: checksum mismatch (the data changed on "
                               "the way)", hint="run the transfer again")
        partial.replace(target)
        return target

    def rm(self, url: BlobURL, recursive: bool = False) -> int:
        """Delete a blob, or with recursive every blob below URL (a whole container when
        URL names only the container). Returns how many blobs were deleted."""
        entries = self.ls(url)
        if not entries:
            raise StorageError(f"nothing at {url}", hint="list with `cloudhpc storage ls`")
        if (len(entries) > 1 or entries[0].name != str(url)) and not recursive:
            raise StorageError(f"{url} is a folder of {len(entries)} blobs",
                               hint="add --recursive to delete them all")
        try:
            with self.durable():
                self._delete(url, entries, recursive)
        except errors.AzureError as exc:
            raise self._fail("deleting", url, exc) from None
        return len(entries)

    def _delete(self, url: BlobURL, entries: list[Entry], recursive: bool) -> None:
        container = self._container(url)
        if recursive and not url.path:
            container.delete_container()  # with everything in it
            return
        names = [e.name.split("/", 3)[3] for e in entries]
        with ThreadPoolExecutor(FILES_IN_PARALLEL) as pool:
            list(pool.map(container.delete_blob, names))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _hook(progress: Progress | None) -> Callable[[int, int | None], None] | None:
    if progress is None:
        return None
    seen = [0]

    def hook(current: int, _total: int | None) -> None:
        progress(current - seen[0])
        seen[0] = current

    return hook


def summary(entries: list[Entry]) -> dict[str, Any]:
    return {"blobs": len(entries), "bytes": sum(e.size for e in entries)}
