"""Azure Resource Manager's documented limits, checked on the rendered template (what is
deployed, not an estimate). Each rule carries the Microsoft page that states it; the README's
table of Azure rules is made from RULES."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

TEMPLATE_LIMITS = ("https://learn.microsoft.com/azure/azure-resource-manager/templates/"
                   "best-practices#template-limits")
CUSTOM_DATA = "https://learn.microsoft.com/azure/virtual-machines/custom-data"

MAX_RESOURCES = 800
MAX_TEMPLATE_BYTES = 4 * 1024 * 1024
MAX_RESOURCE_BYTES = 1024 * 1024
MAX_PARAMETERS = 256
MAX_VARIABLES = 256
MAX_OUTPUTS = 64
MAX_EXPRESSION = 24_576
MAX_CUSTOM_DATA = 65_535  # bytes of the decoded custom data
# the length of the secure parameters' values (1024 random bytes in base64; a 32-byte token)
SECRET_LENGTHS = {"mungeKey": 1368, "clusterToken": 43, "sshPublicKey": 400}


@dataclass(frozen=True)
class Rule:
    rule: str
    reference: str


RULES = [
    Rule(f"at most {MAX_RESOURCES} resources in one template", TEMPLATE_LIMITS),
    Rule("a template of at most 4 MB, each resource definition at most 1 MB", TEMPLATE_LIMITS),
    Rule(f"at most {MAX_PARAMETERS} parameters, {MAX_VARIABLES} variables, {MAX_OUTPUTS} "
         "outputs", TEMPLATE_LIMITS),
    Rule(f"at most {MAX_EXPRESSION:,} characters in a template expression", TEMPLATE_LIMITS),
    Rule("custom data of at most 64 KB", CUSTOM_DATA),
]


def _strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(node, str):
        return [(path, node)]
    if isinstance(node, dict):
        return [e for k, v in node.items() for e in _strings(v, f"{path}.{k}".strip("."))]
    if isinstance(node, list):
        return [e for i, v in enumerate(node) for e in _strings(v, f"{path}[{i}]")]
    return []


def _custom_data_bytes(expression: str) -> int:
    """The decoded length of a custom data value: base64 text, or the cloudhpc expression
    base64(concat('...', parameters('x'), ...)) with the secrets at their real lengths."""
    if not expression.startswith("["):
        return len(base64.b64decode(expression))
    from cloudhpc.azure.arm import decode_custom_data

    values = {k: "x" * n for k, n in SECRET_LENGTHS.items()}
    return len(decode_custom_data(expression, values).encode())


def check(arm: dict[str, Any]) -> list[str]:
    """Every limit the rendered template breaks, one line each (with its reference)."""
    out = []
    resources = arm.get("resources", [])
    if len(resources) > MAX_RESOURCES:
        out.append(f"{len(resources)} resources: Azure deploys at most {MAX_RESOURCES} from "
                   f"one template ({TEMPLATE_LIMITS})")
    size = len(json.dumps(arm, separators=(",", ":")).encode())
    if size > MAX_TEMPLATE_BYTES:
        out.append(f"the template is {size / 2**20:.1f} MB: Azure takes at most 4 MB "
                   f"({TEMPLATE_LIMITS})")
    for key, limit in (("parameters", MAX_PARAMETERS), ("variables", MAX_VARIABLES),
                       ("outputs", MAX_OUTPUTS)):
        if len(arm.get(key, {})) > limit:
            out.append(f"{len(arm[key])} {key}: at most {limit} ({TEMPLATE_LIMITS})")
    for i, r in enumerate(resources):
        where = f"resources[{i}] ({r.get('type')} {r.get('name')})"
        rsize = len(json.dumps(r, separators=(",", ":")).encode())
        if rsize > MAX_RESOURCE_BYTES:
            out.append(f"{where} is {rsize / 2**20:.1f} MB: at most 1 MB ({TEMPLATE_LIMITS})")
        for path, text in _strings(r):
            expression = text.startswith("[") and not text.startswith("[[")
            if expression and len(text) > MAX_EXPRESSION:
                out.append(f"{where}.{path}: an expression of {len(text):,} characters: at "
                           f"most {MAX_EXPRESSION:,} ({TEMPLATE_LIMITS})")
            if path.endswith("customData"):
                n = _custom_data_bytes(text)
                if n > MAX_CUSTOM_DATA:
                    out.append(f"{where}.{path}: custom data of {n:,} bytes: at most 64 KB "
                               f"({CUSTOM_DATA})")
    return out
