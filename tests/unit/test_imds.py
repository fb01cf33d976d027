"""Issue 14, finding 8: a template deployed with `az deployment` names no subscription or
resource group, and the head's control plane exited. It asks the VM's Instance Metadata
Service (a stand-in on this machine's loopback answers as the documented endpoint does:
the `Metadata: true` header required, JSON with compute.subscriptionId and
compute.resourceGroupName)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from cloudhpc.azure import imds
from cloudhpc.errors import CloudHPCError

requests_seen: list[str] = []


class FakeImds(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        requests_seen.append(self.path)
        if self.headers.get("Metadata") != "true":
            self.send_response(400)
            self.end_headers()
            return
        body = json.dumps({"compute": {"subscriptionId": "0000-sub", "name": "head",
                                       "resourceGroupName": "rg-hpc"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(imds.URL_ENV, url)
    try:
        yield url
    finally:
        server.shutdown()


def test_the_vm_learns_its_subscription_and_group(endpoint: str) -> None:
    requests_seen.clear()
    assert imds.subscription_and_group() == ("0000-sub", "rg-hpc")
    assert requests_seen == [f"/metadata/instance?api-version={imds.API_VERSION}"]


def test_no_metadata_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(imds.URL_ENV, "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(CloudHPCError, match="instance metadata") as info:
        imds.subscription_and_group(timeout=2)
    assert "azure.subscription" in info.value.hint
