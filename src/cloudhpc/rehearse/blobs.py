"""The rehearsal's blob service: the deployment's storage accounts served by Azurite at
198.18.0.11:443 over HTTPS, which the VMs reach as <account>.blob.core.windows.net (the
rehearsal's DNS and certificate; Azurite takes the account from the host name, as Azure
does). Bearer tokens are checked as Azurite's `--oauth basic` does (issuer, audience — which
the rehearsal's instance metadata narrows to the accounts an identity has a data role on —
and lifetime), so the head reaches its account with its managed identity and jobs with user
delegation SAS, as on Azure. Every account has a random key the rehearsal keeps to itself:
nothing in a VM can sign with it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cloudhpc.runner import Runner
from cloudhpc.secretfile import write_secret
from cloudhpc.storage.azurite import azurite_command


class BlobService:
    def __init__(self, root: Path, address: str, cert: Path, key: Path, port: int = 443
                 ) -> None:
        self.root, self.address, self.cert, self.key = root / "blob", address, cert, key
        self.port = port
        self.accounts_file = self.root / "accounts.json"
        self.pid_file = self.root / "azurite.pid"
        self.lock = threading.Lock()
        self.pid: int | None = None  # Azurite, a child of this process

    def accounts(self) -> dict[str, str]:
        if not self.accounts_file.exists():
            return {}
        data: dict[str, str] = json.loads(self.accounts_file.read_text())
        return data

    def add(self, name: str) -> None:
        """Serve account NAME (Azurite reads its accounts when it starts: start it again)."""
        with self.lock:
            accounts = self.accounts()
            if name in accounts and self._alive():
                return
            accounts.setdefault(name, base64.b64encode(secrets.token_bytes(64)).decode())
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_secret(self.accounts_file, json.dumps(accounts))
            self._restart(accounts)

    def remove(self, name: str) -> None:
        with self.lock:
            accounts = self.accounts()
            if accounts.pop(name, None) is None:
                return
            write_secret(self.accounts_file, json.dumps(accounts))
            if accounts:
                self._restart(accounts)
            else:  # nothing served: no blob outlives its account
                self.stop()
                shutil.rmtree(self.root / "data", ignore_errors=True)

    def resume(self) -> None:
        """After the rehearsal's endpoint restarts: serve the accounts it had."""
        with self.lock:
            if self.accounts() and not self._alive():
                self._restart(self.accounts())

    def _alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def _restart(self, accounts: dict[str, str]) -> None:
        self.stop()
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = [*azurite_command(), "--blobHost", self.address, "--blobPort", str(self.port),
                "--location", str(data), "--cert", str(self.cert), "--key", str(self.key),
                "--oauth", "basic", "--disableTelemetry", "--skipApiVersionCheck", "--silent"]
        if os.environ.get("CLOUDHPC_AZURITE_DEBUG"):  # Azurite's own account of each request
            argv += ["--debug", str(self.root / "debug.log")]
        env = {"AZURITE_ACCOUNTS": ";".join(f"{n}:{k}" for n, k in accounts.items())}
        self.pid = Runner().start(argv, self.root / "azurite.log", env)
        self.pid_file.write_text(str(self.pid))
        _wait_listening(self.address, self.port, self._alive)

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self._alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
            self.pid = None
        else:
            stop_leftover(self.root.parent)
        self.pid_file.unlink(missing_ok=True)


def stop_leftover(rroot: Path) -> None:
    """Stop an Azurite a previous endpoint left (its pid file)."""
    pid_file = rroot / "blob" / "azurite.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    pid_file.unlink(missing_ok=True)


def _wait_listening(address: str, port: int, alive: Callable[[], bool]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and alive():
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.1)
