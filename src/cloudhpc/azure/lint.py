"""A linter for exported ARM templates: references resolve, parameters are declared and
used, no secret literals, names within Azure's rules, API versions from the pinned list."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from cloudhpc.azure.arm import API_VERSIONS

RESOURCE_ID = re.compile(r"resourceId\('([^']+)',\s*((?:'[^']*'|variables\('[^']*'\))"
                         r"(?:,\s*(?:'[^']*'|variables\('[^']*'\)))*)\)")
ARG = re.compile(r"'([^']*)'|variables\('([^']*)'\)")
PARAM_USE = re.compile(r"parameters\('([^']+)'\)")
VAR_USE = re.compile(r"variables\('([^']+)'\)")
SECRET_NAME = re.compile(r"password|secret|token|key", re.I)
SECRET_TEXT = re.compile(r"ssh-(rsa|ed25519)\s|-----BEGIN|AccountKey=|[A-Za-z0-9+/]{64,}={0,2}")
# Azure naming rules for the resource types cloudhpc writes (literal names only)
_NET = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,78}[A-Za-z0-9_]$"  # network and placement: 1-80
_VM = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}[A-Za-z0-9_]$"  # VNet, VM, scale set: 1-64
NAME_RULES = {
    "Microsoft.Network/networkSecurityGroups": (_NET, 80),
    "Microsoft.Network/virtualNetworks": (_VM, 64),
    "Microsoft.Network/publicIPAddresses": (_NET, 80),
    "Microsoft.Network/natGateways": (_NET, 80),
    "Microsoft.Network/networkInterfaces": (_NET, 80),
    "Microsoft.ManagedIdentity/userAssignedIdentities": (r"^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$",
                                                         128),
    "Microsoft.Compute/proximityPlacementGroups": (_NET, 80),
    "Microsoft.Compute/virtualMachineScaleSets": (_VM, 64),
    "Microsoft.Compute/virtualMachines": (_VM, 64),
    "Microsoft.Storage/storageAccounts": (r"^[a-z0-9]{3,24}$", 24),
}
COMPUTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}[{i}]")


def _declared(arm: dict[str, Any]) -> set[tuple[str, str]]:
    """(type, name) of every resource; names given by variables are resolved."""
    out = set()
    for r in arm.get("resources", []):
        name = r["name"]
        m = re.fullmatch(r"\[variables\('([^']+)'\)\]", name)
        if m:
            name = f"var:{m.group(1)}"
        m = re.fullmatch(r"\[concat\(variables\('([^']+)'\), '([^']*)'\)\]", name)
        if m:
            name = f"var:{m.group(1)}{m.group(2)}"
        out.add((r["type"], name))
        # subnets declared inside their virtual network
        if r["type"] == "Microsoft.Network/virtualNetworks":
            for s in r.get("properties", {}).get("subnets", []):
                out.add(("Microsoft.Network/virtualNetworks/subnets", f"{name}/{s['name']}"))
    return out


def _reference(rtype: str, args_text: str) -> tuple[str, str]:
    parts = []
    for literal, var in ARG.findall(args_text):
        parts.append(f"var:{var}" if var else literal)
    return rtype, "/".join(parts)


def lint(arm: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    declared = _declared(arm)
    params = arm.get("parameters", {})
    variables = arm.get("variables", {})
    text = json.dumps(arm)
    used_params = set(PARAM_USE.findall(text))
    used_vars = set(VAR_USE.findall(text))
    for name in sorted(set(params) - used_params):
        problems.append(f"parameter '{name}' is declared but never used")
    for name in sorted(used_params - set(params)):
        problems.append(f"parameter '{name}' is used but not declared")
    for name in sorted(used_vars - set(variables)):
        problems.append(f"variable '{name}' is used but not declared")
    for name, spec in params.items():
        if SECRET_NAME.search(name) and spec.get("type") != "securestring":
            problems.append(f"parameter '{name}' looks secret but is not a securestring")
        if spec.get("type") == "securestring" and "defaultValue" in spec:
            problems.append(f"securestring parameter '{name}' has a default value")
    for path, value in _strings(arm):
        if path.endswith("customData") and value.startswith("[base64("):
            continue  # an expression over parameters; checked through its cloud-init text
        if SECRET_TEXT.search(value) and not value.startswith("["):
            problems.append(f"{path}: looks like a secret written as a literal")
    for i, r in enumerate(arm.get("resources", [])):
        where = f"resources[{i}] ({r.get('type')} {r.get('name')})"
        rtype = r.get("type", "")
        if rtype not in API_VERSIONS:
            problems.append(f"{where}: resource type not in the pinned list")
        elif r.get("apiVersion") != API_VERSIONS[rtype]:
            problems.append(f"{where}: apiVersion {r.get('apiVersion')} is not the pinned "
                            f"{API_VERSIONS[rtype]}")
        name = r.get("name", "")
        if rtype in NAME_RULES and not name.startswith("["):
            pattern, limit = NAME_RULES[rtype]
            if len(name) > limit or not re.match(pattern, name):
                problems.append(f"{where}: name {name!r} breaks Azure's rules for {rtype} "
                                f"(at most {limit} characters, pattern {pattern})")
        for dep in r.get("dependsOn", []):
            m = RESOURCE_ID.search(dep)
            if not m or _reference(m.group(1), m.group(2)) not in declared:
                problems.append(f"{where}: dependsOn {dep} names no resource of this "
                                "template")
        for path, value in _strings(r.get("properties", {})):
            for m in RESOURCE_ID.finditer(value):
                ref = _reference(m.group(1), m.group(2))
                if ref[0].startswith("Microsoft.Authorization/roleDefinitions"):
                    continue
                if ref not in declared:
                    problems.append(f"{where}: {path} refers to {ref[0]} '{ref[1]}', which "
                                    "this template does not declare")
        profile = r.get("properties", {}).get("osProfile") or r.get("properties", {}).get(
            "virtualMachineProfile", {}).get("osProfile", {})
        for key in ("computerName", "computerNamePrefix"):
            value = profile.get(key)
            if value is not None and not COMPUTER_NAME.match(value):
                problems.append(f"{where}: {key} {value!r} is not a valid Linux host name")
    for path, value in _strings(arm.get("resources", [])):
        for m in re.finditer(r"reference\(resourceId\('([^']+)',\s*'([^']+)'\)\)", value):
            if (m.group(1), m.group(2)) not in declared:
                problems.append(f"{path}: reference() to undeclared {m.group(1)} "
                                f"'{m.group(2)}'")
    return problems
