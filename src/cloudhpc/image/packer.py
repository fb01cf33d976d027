"""`cloudhpc image export`: the node image's recipe for Azure — a Packer template (the
azure-arm builder) that runs the same provision.sh the rehearsal's image is built with, on
the template's base image, with cloudhpc's wheel and its dependencies' wheels uploaded beside
it and checked against their sha256 before anything is installed (nothing is fetched from
PyPI, and no package name on PyPI decides what runs on the cluster's VMs)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from cloudhpc.image.build import RECIPE, source_tree
from cloudhpc.template.schema import Template

# Linux VMs are generalized with the Azure agent before an image is captured:
# https://learn.microsoft.com/azure/virtual-machines/linux/capture-image
DEPROVISION = "/usr/sbin/waagent -force -deprovision+user && export HISTSIZE=0 && sync"


def _hcl(t: Template, wheel: str) -> str:
    publisher, offer, sku, _ = t.azure.image.split(":")
    region = t.azure.region or "eastus"
    return f'''# cloudhpc node image for cluster {t.name}: build with
#   packer init . && packer build -var subscription_id=... -var resource_group=... .
packer {{
  required_plugins {{
    azure = {{
      source  = "github.com/hashicorp/azure"
      version = ">= 2.0.0"
    }}
  }}
}}

variable "subscription_id" {{ type = string }}
variable "resource_group" {{ type = string }}

source "azure-arm" "node" {{
  use_azure_cli_auth                = true
  subscription_id                   = var.subscription_id
  location                          = "{region}"
  image_publisher                   = "{publisher}"
  image_offer                       = "{offer}"
  image_sku                         = "{sku}"
  os_type                           = "Linux"
  vm_size                           = "Standard_D4s_v5"
  managed_image_name                = "cloudhpc-{wheel[:16]}"
  managed_image_resource_group_name = var.resource_group
}}

build {{
  sources = ["source.azure-arm.node"]
  provisioner "file" {{
    source      = "wheelhouse"
    destination = "/tmp/"
  }}
  provisioner "file" {{
    source      = "provision.sh"
    destination = "/tmp/provision.sh"
  }}
  provisioner "shell" {{
    inline = [
      "cd /tmp/wheelhouse && sha256sum --strict -c SHA256SUMS",
      "sudo sh /tmp/provision.sh /tmp/wheelhouse cloudhpc",
      "sudo sh -c '{DEPROVISION}'",
    ]
  }}
}}
'''


def export(t: Template, dest: Path) -> tuple[list[Path], str]:
    """Write the recipe into DEST; returns (files, the cloudhpc wheel's sha256)."""
    import os
    import sys

    from cloudhpc.runner import Runner

    dest.mkdir(parents=True, exist_ok=True)
    wheels = dest / "wheelhouse"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    Runner().run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels),
                  str(source_tree())], env=dict(os.environ), timeout=900)
    sums = []
    wheel_sha = ""
    for w in sorted(wheels.glob("*.whl")):
        sha = hashlib.sha256(w.read_bytes()).hexdigest()
        sums.append(f"{sha}  {w.name}")
        if w.name.startswith("cloudhpc-"):
            wheel_sha = sha
    (wheels / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    shutil.copy2(RECIPE, dest / "provision.sh")
    (dest / "node-image.pkr.hcl").write_text(_hcl(t, wheel_sha))
    return [dest / "node-image.pkr.hcl", dest / "provision.sh", wheels / "SHA256SUMS"], wheel_sha
