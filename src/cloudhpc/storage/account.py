"""Where a cluster's blob store is and how cloudhpc reaches it (no SDK import here: the node
bootstrap and `up` need only this): locally, Azurite with a generated account key; on Azure,
the deployment's storage account through the head VM's managed identity (no key at all)."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from cloudhpc.secretfile import write_secret

ACCOUNT = "cloudhpc"
PORT = 10000


@dataclass(frozen=True)
class BlobAccount:
    """Where a cluster's blob store is and its (generated) account key."""

    account: str
    key: str
    endpoint: str  # http://ADDRESS:PORT/ACCOUNT (Azurite) or https://ACCOUNT.blob...
    # Azurite's metadata file on this machine: a write is done once it has been saved
    saved_state: str = ""
    # Azure: no key; the VM's managed identity (a Storage Blob Data role on this account)
    identity: bool = False

    @classmethod
    def generate(cls, address: str, saved_state: str = "") -> BlobAccount:
        key = base64.b64encode(secrets.token_bytes(64)).decode()
        return cls(ACCOUNT, key, f"http://{address}:{PORT}/{ACCOUNT}", saved_state)

    @classmethod
    def managed(cls, name: str, suffix: str = "core.windows.net") -> BlobAccount:
        """The deployment's storage account NAME on Azure, reached with the VM's identity."""
        return cls(name, "", f"https://{name}.blob.{suffix}", identity=True)

    @classmethod
    def load(cls, path: Path) -> BlobAccount:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        write_secret(path, json.dumps(asdict(self)))

    @property
    def azurite_accounts(self) -> str:
        """The AZURITE_ACCOUNTS value that replaces Azurite's well-known development key."""
        return f"{self.account}:{self.key}"
