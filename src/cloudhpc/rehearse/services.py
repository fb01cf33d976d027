"""The platform services every rehearsal VM reaches, as on Azure: the Instance Metadata
Service at 169.254.169.254 (the VM's own description, and tokens for its managed identity)
and Azure-provided DNS at 168.63.129.16 (the VNet's VM names; Azure's endpoint names lead to
the rehearsal's stand-ins)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cloudhpc.rehearse.engine import NIC_TYPES, ROLE_ASSIGNMENT, VM_TYPES, Engine

IMDS_DOC = "https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service"


def _vm_by_address(engine: Engine, address: str) -> dict[str, Any] | None:
    with engine.lock:
        for r in engine.resources.values():
            if r.get("type") not in NIC_TYPES:
                continue
            for conf in (r.get("properties") or {}).get("ipConfigurations") or []:
                if (conf.get("properties") or {}).get("privateIPAddress") == address:
                    vm_ref = ((r.get("properties") or {}).get("virtualMachine") or {}).get("id")
                    return engine.resources.get((vm_ref or "").lower())
    return None


def imds_app(engine: Engine, issue: Callable[[str], str]) -> FastAPI:
    """ISSUE(principal id) -> a bearer token the rehearsal's Resource Manager accepts."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def _who(request: Request) -> dict[str, Any] | JSONResponse:
        if request.headers.get("metadata", "").lower() != "true":
            return JSONResponse({"error": "Bad request. Required metadata header not "
                                          "specified"}, status_code=400)
        if "x-forwarded-for" in request.headers:
            return JSONResponse({"error": "Bad request"}, status_code=400)
        vm = _vm_by_address(engine, request.client.host if request.client else "")
        if vm is None:
            return JSONResponse({"error": "no VM at this address"}, status_code=404)
        return vm

    @app.get("/metadata/instance")
    def instance(request: Request) -> Any:
        vm = _who(request)
        if isinstance(vm, JSONResponse):
            return vm
        parts = vm["id"].split("/")
        p = vm.get("properties") or {}
        image = (p.get("storageProfile") or {}).get("imageReference") or {}
        tags = vm.get("tags") or {}
        return {"compute": {
            "name": vm["name"], "resourceGroupName": parts[4], "subscriptionId": parts[2],
            "location": vm.get("location", ""), "vmId": p.get("vmId", ""),
            "vmSize": (p.get("hardwareProfile") or {}).get("vmSize", ""),
            "osProfile": {"computerName": (p.get("osProfile") or {}).get("computerName", ""),
                          "adminUsername": (p.get("osProfile") or {}).get("adminUsername", "")},
            "publicKeys": ((((p.get("osProfile") or {}).get("linuxConfiguration") or {})
                            .get("ssh") or {}).get("publicKeys") or []),
            "storageProfile": {"imageReference": image},
            "tagsList": [{"name": k, "value": v} for k, v in tags.items()],
            "resourceId": vm["id"]}}

    @app.get("/metadata/identity/oauth2/token")
    def token(request: Request, resource: str = "") -> Any:
        vm = _who(request)
        if isinstance(vm, JSONResponse):
            return vm
        identities = (vm.get("identity") or {}).get("userAssignedIdentities") or {}
        if not identities:
            return JSONResponse({"error": "invalid_request", "error_description":
                                 "Identity not found"}, status_code=400)
        ident = engine.resources.get(next(iter(identities)).lower()) or {}
        principal = (ident.get("properties") or {}).get("principalId", "")
        expires = int(time.time()) + 3600
        if _is_storage(resource):
            tenant = (ident.get("properties") or {}).get("tenantId", "")
            access = storage_token(principal, tenant, data_accounts(engine, principal),
                                   expires)
        else:
            access = issue(principal)
        return {"access_token": access, "expires_in": "3600",
                "expires_on": str(expires), "not_before": str(int(time.time())),
                "resource": resource, "token_type": "Bearer",
                "client_id": (ident.get("properties") or {}).get("clientId", "")}

    return app


# built-in roles that read or write blob data (role-based-access-control/built-in-roles)
BLOB_DATA_ROLES = ("ba92f5b4-2d11-453d-a403-e96b0029c9fe",   # Storage Blob Data Contributor
                   "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",   # Storage Blob Data Owner
                   "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1")   # Storage Blob Data Reader
NO_DATA_ROLE = "https://no-blob-data-role.rehearsal"


def _is_storage(resource: str) -> bool:
    r = resource.lower().rstrip("/")
    return r == "https://storage.azure.com" or r.endswith(".blob.core.windows.net")


def data_accounts(engine: Engine, principal: str) -> list[str]:
    """Storage accounts PRINCIPAL has a blob data role on (at the account, or above it)."""
    with engine.lock:
        scopes = [(r.get("properties") or {}).get("scope", "").lower()
                  for r in engine.resources.values()
                  if r.get("type") == ROLE_ASSIGNMENT
                  and (r.get("properties") or {}).get("principalId") == principal
                  and str((r.get("properties") or {}).get("roleDefinitionId", "")).lower()
                  .rsplit("/", 1)[-1] in BLOB_DATA_ROLES]
        return sorted(r["name"] for r in engine.resources.values()
                      if r.get("type") == "Microsoft.Storage/storageAccounts"
                      and any(r["id"].lower() == s or r["id"].lower().startswith(s + "/")
                              for s in scopes if s))


def storage_token(principal: str, tenant: str, accounts: list[str], expires: int) -> str:
    """A token for Azure Storage, shaped as Entra ID's (a JWT: issuer, audience, lifetime,
    object id). The rehearsal's blob service checks issuer, audience and lifetime; the
    audience names the one account the identity may use (Azure would refuse the data
    request of an identity without a data role, AuthorizationPermissionMismatch: here the
    token's audience is refused)."""
    if len(accounts) == 1:
        audience = f"https://{accounts[0]}.blob.core.windows.net"
    else:
        audience = "https://storage.azure.com" if accounts else NO_DATA_ROLE
    now = int(time.time())
    claims = {"aud": audience, "iss": f"https://sts.windows.net/{tenant}/", "iat": now,
              "nbf": now, "exp": expires, "oid": principal, "sub": principal,
              "tid": tenant, "ver": "1.0"}

    def part(data: dict[str, Any] | bytes) -> str:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = part({"alg": "HS256", "typ": "JWT"}) + "." + part(claims)
    signature = hmac.new(_SIGNING_KEY, head.encode(), hashlib.sha256).digest()
    return head + "." + part(signature)


_SIGNING_KEY = secrets.token_bytes(32)


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, engine: Engine, fixed: dict[str, str], suffixes: dict[str, str]) -> None:
        self.engine, self.fixed, self.suffixes = engine, fixed, suffixes

    def _lookup(self, name: str) -> str | None:
        name = name.rstrip(".").lower()
        if name in self.fixed:
            return self.fixed[name]
        for suffix, address in self.suffixes.items():
            if name.endswith(suffix):
                return address
        host = name.removesuffix(".internal.cloudapp.net")
        with self.engine.lock:
            for r in self.engine.resources.values():
                if r.get("type") not in VM_TYPES:
                    continue
                profile = (r.get("properties") or {}).get("osProfile") or {}
                if profile.get("computerName", "").lower() == host:
                    refs = ((r.get("properties") or {}).get("networkProfile") or {}).get(
                        "networkInterfaces") or []
                    nic = self.engine.resources.get(refs[0]["id"].lower()) if refs else None
                    confs = ((nic or {}).get("properties") or {}).get("ipConfigurations") or []
                    if confs:
                        return str(confs[0]["properties"].get("privateIPAddress"))
        return None

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        q = request.q
        address = self._lookup(str(q.qname))
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(address), ttl=10))
        return reply


def dns_server(engine: Engine, address: str, fixed: dict[str, str],
               suffixes: dict[str, str]) -> DNSServer:
    server = DNSServer(_Resolver(engine, fixed, suffixes), address=address, port=53,
                       logger=_Silent())
    return server


class _Silent:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def new_token() -> str:
    return secrets.token_urlsafe(32)


__all__ = ["dns_server", "imds_app", "new_token", "threading"]
