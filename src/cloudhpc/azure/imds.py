"""Azure's Instance Metadata Service, as the head VM's control plane asks it: the
subscription and resource group the VM lives in, when the template does not name them (a
template deployed with `az deployment group create` instead of `cloudhpc up`).

Documented at https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service
(GET /metadata/instance?api-version=2021-02-01 with the header `Metadata: true`, answered
only from inside the VM, never through a proxy). Standard library only."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from cloudhpc.errors import CloudHPCError

ADDRESS = "http://169.254.169.254"  # link-local: reachable from the VM only
API_VERSION = "2021-02-01"
URL_ENV = "CLOUDHPC_IMDS_URL"  # another endpoint (the rehearsal's, the tests')


def instance(timeout: float = 5.0) -> dict[str, Any]:
    base = os.environ.get(URL_ENV, ADDRESS)
    request = urllib.request.Request(
        f"{base}/metadata/instance?api-version={API_VERSION}", headers={"Metadata": "true"})
    # no proxy: IMDS refuses requests that carry X-Forwarded-For, and a proxy cannot reach it
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            data: dict[str, Any] = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CloudHPCError(f"Azure instance metadata ({base}) did not answer: {exc}",
                            hint="run on an Azure VM, or name azure.subscription and "
                            "azure.resource_group in the template") from exc
    return data


def subscription_and_group(timeout: float = 5.0) -> tuple[str, str]:
    compute = instance(timeout).get("compute", {})
    sub, group = compute.get("subscriptionId", ""), compute.get("resourceGroupName", "")
    if not (sub and group):
        raise CloudHPCError("Azure instance metadata names no subscription or resource group",
                            hint="name azure.subscription and azure.resource_group in the "
                            "template")
    return str(sub), str(group)


def image_id(timeout: float = 5.0) -> str:
    """The resource id of the image this VM booted (the node image)."""
    ref = instance(timeout).get("compute", {}).get("storageProfile", {}).get(
        "imageReference", {})
    if not ref.get("id"):
        raise CloudHPCError("Azure instance metadata names no image id for this VM",
                            hint="deploy the head from cloudhpc's node image (imageId)")
    return str(ref["id"])


def ssh_public_key(timeout: float = 5.0) -> str:
    """The VM's admin SSH public key (the deployment's sshPublicKey parameter)."""
    keys = instance(timeout).get("compute", {}).get("publicKeys") or []
    data = next((k.get("keyData", "") for k in keys if k.get("keyData")), "")
    if not data:
        raise CloudHPCError("Azure instance metadata names no SSH public key for this VM",
                            hint="deploy with the sshPublicKey parameter")
    return str(data).strip()
