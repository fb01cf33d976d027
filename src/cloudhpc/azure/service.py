"""`cloudhpc up` / `down` for provider azure: secrets kept in the state directory, the
deployment through the SDK, the cluster recorded like a local one."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from cloudhpc.azure.deploy import AzureDeployment, Progress, _noop
from cloudhpc.errors import CloudHPCError
from cloudhpc.paths import ClusterDir
from cloudhpc.secretfile import write_secret
from cloudhpc.state import ClusterRecord, Store
from cloudhpc.template.schema import Template

SSH_KEYS = ["~/.ssh/id_ed25519.pub", "~/.ssh/id_rsa.pub", "~/.ssh/id_ecdsa.pub"]


def target(t: Template, subscription: str | None, resource_group: str | None) -> Template:
    """The template with where it goes filled in (options, then template, then defaults)."""
    sub = subscription or t.azure.subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
    if not sub:
        raise CloudHPCError("no Azure subscription given",
                            hint="pass --subscription ID, set azure.subscription in the "
                            "template, or export AZURE_SUBSCRIPTION_ID")
    rg = resource_group or t.azure.resource_group or f"cloudhpc-{t.name}"
    azure = t.azure.model_copy(update={"subscription": sub, "resource_group": rg})
    return t.model_copy(update={"azure": azure, "provider": "azure"})


def ssh_public_key(path: str | None) -> str:
    candidates = [path] if path else SSH_KEYS
    for candidate in candidates:
        p = Path(candidate).expanduser()
        if p.is_file():
            return p.read_text().strip()
    raise CloudHPCError("no SSH public key for the cluster's admin user",
                        hint="pass --ssh-key PATH (e.g. ~/.ssh/id_ed25519.pub) or create one "
                        "with ssh-keygen")


def cluster_secrets(cdir: ClusterDir) -> dict[str, str]:
    """The munge key and control token of the cluster, made once and kept (mode 0600)."""
    cdir.etc.mkdir(parents=True, exist_ok=True)
    made = {"mungeKey": base64.b64encode(os.urandom(1024)).decode(),
            "clusterToken": secrets.token_urlsafe(32)}
    out = {}
    for name, fresh in made.items():
        path = cdir.etc / f"azure-{name}"
        if not path.exists():
            write_secret(path, fresh, exclusive=True)
        out[name] = path.read_text()
    return out


def up(t: Template, store: Store, ssh_key: str | None = None, progress: Progress = _noop,
       credential: Any = None, image_id: str | None = None,
       **client_kwargs: Any) -> dict[str, Any]:
    assert t.azure.subscription and t.azure.resource_group
    if not image_id:
        raise CloudHPCError("no node image given: Azure VMs boot cloudhpc's node image, with "
                            "everything installed", hint="build it with Packer from `cloudhpc "
                            "image export` and pass --image-id RESOURCE_ID (or rehearse: "
                            "`cloudhpc up TEMPLATE --rehearse`)")
    data = t.model_dump(mode="json")
    existing = store.cluster(t.name)
    if existing is not None and existing.template != data:
        raise CloudHPCError(f"cluster '{t.name}' already exists with another template",
                            hint=f"run `cloudhpc down {t.name}` first, or pick a new name")
    cdir = ClusterDir.of(t.name, store.path.parent)
    values = {"sshPublicKey": ssh_public_key(ssh_key), **cluster_secrets(cdir),
              "imageId": image_id}
    store.put_cluster(t.name, "azure", "creating", data, t.network.cidr)
    deployment = AzureDeployment(t.azure.subscription, t.azure.resource_group, credential,
                                 **client_kwargs)
    outputs = deployment.deploy(t, values, progress)
    store.set_status(t.name, "running")
    return outputs


def down(record: ClusterRecord, store: Store, credential: Any = None,
         **client_kwargs: Any) -> list[str]:
    t = Template.model_validate(record.template)
    assert t.azure.subscription and t.azure.resource_group
    deployment = AzureDeployment(t.azure.subscription, t.azure.resource_group, credential,
                                 **client_kwargs)
    removed = deployment.destroy(t)
    store.delete_cluster(t.name)
    shutil.rmtree(ClusterDir.of(t.name, store.path.parent).root, ignore_errors=True)
    return removed
