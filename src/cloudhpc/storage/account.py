"""Where a cluster's blob store is and its generated account key (no SDK import here: the
node bootstrap and `up` need only this)."""

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

    @classmethod
    def generate(cls, address: str, saved_state: str = "") -> BlobAccount:
        key = base64.b64encode(secrets.token_bytes(64)).decode()
        return cls(ACCOUNT, key, f"http://{address}:{PORT}/{ACCOUNT}", saved_state)

    @classmethod
    def load(cls, path: Path) -> BlobAccount:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        write_secret(path, json.dumps(asdict(self)))

    @property
    def azurite_accounts(self) -> str:
        """The AZURITE_ACCOUNTS value that replaces Azurite's well-known development key."""
        return f"{self.account}:{self.key}"
