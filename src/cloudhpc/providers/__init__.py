"""Where callers get a provider: `backend_for` (a whole cluster, from this machine) and
`provider_for` (nodes only, for the control plane on the head). The only module that names
the implementations."""

from __future__ import annotations

import base64

from cloudhpc.paths import ClusterDir
from cloudhpc.plan import Plan
from cloudhpc.providers.base import Backend, Provider
from cloudhpc.runner import Runner
from cloudhpc.template.schema import Template


def backend_for(template: Template, plan: Plan, cdir: ClusterDir,
                runner: Runner | None = None) -> Backend | None:
    """The backend that can bring this cluster up from this machine; None where the
    deployment is done another way (Azure: an ARM template, `cloudhpc.azure.service`)."""
    if template.provider == "local":
        from cloudhpc.providers.local import LocalBackend

        return LocalBackend(plan, cdir, runner)
    return None


def provider_for(template: Template, plan: Plan, cdir: ClusterDir) -> Provider:
    """The provider the control plane uses to create and remove nodes."""
    if template.provider == "azure":  # on the head VM, with its managed identity
        from cloudhpc.azure import imds
        from cloudhpc.azure.provider import AzureProvider

        # where the head lives and the image it booted (the nodes it makes boot the same),
        # from the VM's instance metadata: also for a template deployed with `az deployment`
        subscription, group = template.azure.subscription, template.azure.resource_group
        if not (subscription and group):
            subscription, group = imds.subscription_and_group()
        image_id = imds.image_id()
        # the deployment's secrets, for the custom data of the VMs it creates; the admin
        # key as Azure gave it to this VM (the deployment's sshPublicKey)
        ssh_key = imds.ssh_public_key()
        secrets = {"mungeKey": base64.b64encode(cdir.munge_key.read_bytes()).decode(),
                   "sshPublicKey": ssh_key,  # the control token stays on the head
                   "imageId": image_id}
        from cloudhpc.azure.uniform import NAMES_DIR, Assignments

        assignments = Assignments(cdir.etc / "azure-assignments.json", cdir.shared / NAMES_DIR)
        return AzureProvider(template, plan, subscription, group, secrets=secrets,
                             assignments=assignments)
    from cloudhpc.providers.local import LocalBackend

    return LocalBackend(plan, cdir)


def remove_unrecorded(name: str, cdir: ClusterDir, others: list[str]) -> list[str]:
    """What a cluster NAME left on this machine without a record (only local clusters leave
    anything here); returns what was removed."""
    from cloudhpc.providers.local.cleanup import remove_leftovers

    return remove_leftovers(name, cdir, others)
