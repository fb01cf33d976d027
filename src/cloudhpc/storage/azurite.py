"""Azurite, the Azure Storage emulator, as the local storage node's blob service."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cloudhpc.errors import CloudHPCError
from cloudhpc.node.spec import DaemonSpec
from cloudhpc.storage.account import PORT, BlobAccount

# the project's own npm install (package.json at the repository root)
NODE_MODULES = Path(__file__).resolve().parents[3] / "node_modules"
PROJECT_BIN = NODE_MODULES / ".bin" / "azurite-blob"
# Azurite's blob service in one file (scripts/install.sh bundles it with esbuild), started
# with V8's code cache by START: 1.0 s of CPU instead of 2.6 s (azurite_start.js)
BUNDLE = NODE_MODULES / ".cloudhpc" / "azurite-blob.js"
START = Path(__file__).with_name("azurite_start.js")

DURABLE_PATCH = Path(__file__).with_name("azurite_durable.js")
METADATA_DB = "__azurite_db_blob__.json"  # where Azurite saves blob metadata (LokiJS)


class AzuriteMissingError(CloudHPCError):
    def __init__(self) -> None:
        super().__init__("Azurite (npm package 'azurite') is not installed; the storage "
                         "node needs it for the blob store",
                         hint="run `make install` (it runs `npm install` in the project), or "
                         "set storage.blob.enabled: false in the template")


def azurite_bin() -> str:
    for candidate in (os.environ.get("CLOUDHPC_AZURITE"), str(PROJECT_BIN),
                      shutil.which("azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AzuriteMissingError()


def azurite_command() -> list[str]:
    """How to start Azurite's blob service: the bundle with its code cache if `make install`
    made it (and CLOUDHPC_AZURITE names no other Azurite), else Azurite's own command."""
    node = shutil.which("node")
    if not os.environ.get("CLOUDHPC_AZURITE") and node and BUNDLE.is_file():
        return [node, str(START), str(BUNDLE)]
    return [azurite_bin()]


def azurite_daemon(address: str, data_dir: Path, account: BlobAccount) -> DaemonSpec:
    """Supervisor spec: listens on the cluster network only, data under the state directory,
    the cluster's generated key instead of the well-known one, and no telemetry."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    command = azurite_command()
    spec: DaemonSpec = {
        "name": "azurite",
        "argv": [*command, "--blobHost", address, "--blobPort", str(PORT),
                 "--location", str(data_dir), "--disableTelemetry", "--skipApiVersionCheck",
                 "--loose", "--silent"],
        "env": {"AZURITE_ACCOUNTS": account.azurite_accounts,
                "NODE_OPTIONS": f"--require {DURABLE_PATCH}"},
    }
    if str(START) in command:  # our start takes the port from the supervisor, and goes
        spec["listen"] = [address, PORT]  # back to a normal CPU share once it listens
        spec["low_start"] = True
    return spec
