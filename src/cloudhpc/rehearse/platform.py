"""What runs behind the rehearsal's resources on this machine: a bridge per virtual network
(its subnet's gateway address on it, as Azure's is the subnet's first address), a VM sandbox
per VM (vms.py) from the node image the VM names, and the platform addresses every VM reaches
(instance metadata, DNS; Azure's endpoints only with a public IP or a NAT gateway)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from cloudhpc.image import build
from cloudhpc.rehearse.blobs import BlobService
from cloudhpc.rehearse.engine import VM_TYPES, ArmError
from cloudhpc.rehearse.vms import IMDS, STORAGE_ENDPOINT, WIRESERVER, Sandbox, VmSpec, short
from cloudhpc.runner import Result, Runner

ARM_ADDRESS = "198.18.0.10"   # management.azure.com here
BLOB_ADDRESS = STORAGE_ENDPOINT  # <account>.blob.core.windows.net here
HOST_ADDRESSES = (IMDS, WIRESERVER, ARM_ADDRESS, BLOB_ADDRESS)
IMAGE_TYPE = "Microsoft.Compute/images"


def _ip(*args: str, check: bool = True) -> Result:
    return Runner().run(["ip", *args], check=check)


def add_host_addresses() -> None:
    for address in HOST_ADDRESSES:
        _ip("addr", "replace", f"{address}/32", "dev", "lo")


def remove_host_addresses() -> None:
    for address in HOST_ADDRESSES:
        _ip("addr", "del", f"{address}/32", "dev", "lo", check=False)


def bridge_name(vnet_id: str) -> str:
    return f"rhb{short(vnet_id.lower())}"


def _props(r: dict[str, Any]) -> dict[str, Any]:
    return r.get("properties") or {}


STORAGE = "Microsoft.Storage/storageAccounts"


class VmPlatform:
    def __init__(self, root: Path, platform_layer: Path, blobs: BlobService | None = None
                 ) -> None:
        self.root = root
        self.vm_root = root / "vms"
        self.platform_layer = platform_layer
        self.blobs = blobs

    # --- lookups ---------------------------------------------------------------------------
    def sandbox(self, vm: dict[str, Any], world: dict[str, dict[str, Any]]) -> Sandbox:
        return Sandbox(self.vm_root, self._spec(vm, world))

    def _nic(self, vm: dict[str, Any], world: dict[str, dict[str, Any]]) -> dict[str, Any]:
        refs = (_props(vm).get("networkProfile") or {}).get("networkInterfaces") or []
        for ref in refs:
            nic = world.get(ref["id"].lower())
            if nic is not None:
                return nic
        raise ArmError(400, "NetworkInterfaceNotFound",
                       f"{vm['name']}: its network interface does not exist")

    def _subnet(self, nic: dict[str, Any], world: dict[str, dict[str, Any]]
                ) -> tuple[str, ipaddress.IPv4Network, dict[str, Any]]:
        conf = (_props(nic).get("ipConfigurations") or [{}])[0].get("properties") or {}
        sid = (conf.get("subnet") or {}).get("id", "")
        vnet_id, _, name = sid.rpartition("/subnets/")
        vnet = world.get(vnet_id.lower())
        for s in _props(vnet or {}).get("subnets") or []:
            if s["name"] == name:
                net = ipaddress.ip_network(s["properties"]["addressPrefix"])
                return vnet_id, net, conf  # type: ignore[return-value]
        raise ArmError(400, "InvalidResourceReference", f"{nic['name']}: subnet {sid} not found")

    def _image(self, vm: dict[str, Any], world: dict[str, dict[str, Any]]) -> str:
        ref = ((_props(vm).get("storageProfile") or {}).get("imageReference") or {})
        rid = ref.get("id", "")
        image = world.get(rid.lower()) if rid else None
        if image is None:
            what = rid or ":".join(str(ref.get(k, "")) for k in ("publisher", "offer", "sku"))
            raise ArmError(404, "ImageNotFound",
                           f"{vm['name']}: the image {what} does not exist here: the "
                           "rehearsal boots only node images built from cloudhpc's recipe "
                           "(`cloudhpc image build`)")
        layer = build.cache_root() / image["name"]
        base_file = layer / "base"
        if not (layer / ".complete").exists() or not base_file.exists():
            raise ArmError(404, "ImageNotFound", f"{image['name']} is not in the image cache")
        return f"{self.platform_layer}:{layer / 'upper'}:{base_file.read_text().strip()}"

    def _spec(self, vm: dict[str, Any], world: dict[str, dict[str, Any]]) -> VmSpec:
        nic = self._nic(vm, world)
        vnet_id, net, conf = self._subnet(nic, world)
        profile = _props(vm).get("osProfile") or {}
        # a public IP on the NIC or a NAT gateway on the subnet: Azure's endpoints reachable
        subnet_name = (conf.get("subnet") or {}).get("id", "").rpartition("/")[2]
        subnets = _props(world.get(vnet_id.lower()) or {}).get("subnets") or []
        mine = next((s.get("properties") or {} for s in subnets if s["name"] == subnet_name),
                    {})
        nat = bool(mine.get("natGateway"))
        storage = any(e.get("service") == "Microsoft.Storage"
                      for e in mine.get("serviceEndpoints") or [])
        outbound = bool(conf.get("publicIPAddress")) or nat
        return VmSpec(vm["id"], _props(vm).get("vmId", vm["id"]),
                      profile.get("computerName", vm["name"]), conf["privateIPAddress"],
                      net.prefixlen, bridge_name(vnet_id), str(net.network_address + 1),
                      profile.get("customData", ""), outbound, self._image(vm, world),
                      str(self.root / "nfs" / bridge_name(vnet_id)),
                      profile.get("adminUsername", ""), tuple(
                          k.get("keyData", "") for k in ((profile.get("linuxConfiguration") or {})
                                                         .get("ssh") or {}).get("publicKeys")
                          or []),
                      tuple((_props(world.get(vnet_id.lower()) or {}).get("addressSpace") or {})
                            .get("addressPrefixes") or []), storage)

    # --- Platform ----------------------------------------------------------------------------
    def create(self, resource: dict[str, Any], world: dict[str, dict[str, Any]]) -> None:
        rtype = resource["type"]
        if rtype == "Microsoft.Network/virtualNetworks":
            self._bridge(resource, world)
        elif rtype in VM_TYPES:
            self.sandbox(resource, world).boot()
        elif rtype == STORAGE and self.blobs is not None:
            self.blobs.add(resource["name"])

    def _bridge(self, vnet: dict[str, Any], world: dict[str, dict[str, Any]]) -> None:
        mine = [ipaddress.ip_network(p) for p in
                (_props(vnet).get("addressSpace") or {}).get("addressPrefixes") or []]
        for other in world.values():
            if other.get("type") != vnet["type"] or other["id"].lower() == vnet["id"].lower():
                continue
            for p in (_props(other).get("addressSpace") or {}).get("addressPrefixes") or []:
                if any(ipaddress.ip_network(p).overlaps(m) for m in mine):
                    raise ArmError(400, "RehearsalAddressOverlap",
                                   f"{vnet['name']}: {p} overlaps {other['name']} on this "
                                   "machine (Azure allows it in separate VNets; the rehearsal "
                                   "puts every VNet on one machine): pick another cidr")
        name = bridge_name(vnet["id"])
        if _ip("link", "show", name, check=False).returncode != 0:
            _ip("link", "add", name, "type", "bridge")
        _ip("link", "set", name, "up")
        for s in _props(vnet).get("subnets") or []:
            net = ipaddress.ip_network(s["properties"]["addressPrefix"])
            _ip("addr", "replace", f"{net.network_address + 1}/{net.prefixlen}", "dev", name)

    def restart(self, vm: dict[str, Any], world: dict[str, dict[str, Any]]) -> None:
        box = self.sandbox(vm, world)
        box.stop()
        box.boot()

    def delete(self, resource: dict[str, Any]) -> None:
        rtype = resource["type"]
        if rtype == "Microsoft.Network/virtualNetworks":
            _ip("link", "del", bridge_name(resource["id"]), check=False)
        elif rtype == STORAGE and self.blobs is not None:
            self.blobs.remove(resource["name"])
        elif rtype in VM_TYPES:
            d = self.vm_root / short(resource["id"], 16)
            if (d / "spec.json").exists():
                Sandbox(self.vm_root, _spec_of(d / "spec.json")).delete()

    def running(self) -> list[Sandbox]:
        out = []
        for spec in self.vm_root.glob("*/spec.json"):
            out.append(Sandbox(self.vm_root, _spec_of(spec)))
        return out


def _spec_of(path: Path) -> VmSpec:
    import json

    data = json.loads(path.read_text())
    data["ssh_keys"] = tuple(data.get("ssh_keys") or ())
    data["vnet_prefixes"] = tuple(data.get("vnet_prefixes") or ())
    return VmSpec(**data)
