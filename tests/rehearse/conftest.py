"""The rehearsal's Resource Manager endpoint, served over HTTPS in this process for the real
Azure SDK (azure-mgmt-resource, azure-mgmt-compute) to talk to."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from azure.core.credentials import AccessToken

from cloudhpc.rehearse import pki
from cloudhpc.rehearse.engine import Engine
from cloudhpc.rehearse.server import create_app

SUB = "00000000-0000-0000-0000-0000000000aa"
TOKEN = "rehearsal-test-token"


class Credential:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@dataclass
class Arm:
    engine: Engine
    url: str
    ca: Path

    def kwargs(self) -> dict[str, Any]:
        """What an azure-mgmt client needs to talk to the rehearsal instead of Azure."""
        return {"base_url": self.url, "connection_verify": str(self.ca),
                "polling_interval": 0.05, "retry_backoff_factor": 0}


@pytest.fixture()
def arm(tmp_path: Path) -> Iterator[Arm]:
    ca, crt, key = pki.ensure(tmp_path / "pki", [])
    engine = Engine.load(tmp_path / "world.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(engine, {TOKEN}), host="127.0.0.1", port=port,
                            ssl_certfile=str(crt), ssl_keyfile=str(key), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield Arm(engine, f"https://127.0.0.1:{port}", ca)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
