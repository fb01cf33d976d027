"""The rehearsal's Resource Manager endpoint: Azure's REST paths for resource groups,
deployments, generic resources and the compute, network and storage resources cloudhpc uses,
served over HTTPS (the Azure SDK sends bearer tokens over TLS only) by the engine.

The Azure SDK is pointed at it with `base_url` (azure-mgmt clients) and the rehearsal's CA
(`connection_verify`); a token is one the rehearsal issued (tokens.json)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from cloudhpc.rehearse.engine import ArmError, Engine, type_of

GROUP = re.compile(r"^/subscriptions/([^/]+)/resourcegroups/([^/]+)", re.I)
OPERATION = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.Compute/locations/[^/]+/"
                       r"operations/([0-9a-f]+)$", re.I)
DEPLOYMENT = re.compile(r"^(?:/providers/Microsoft\.Resources)?/deployments/([^/]+)(/operations)?$",
                        re.I)


def _error(exc: ArmError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _tag_filter(text: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"tagName eq '([^']*)' and tagValue eq '([^']*)'", text.strip())
    return (m.group(1), m.group(2)) if m else None


def _operation(op: dict[str, Any], did: str) -> dict[str, Any]:
    return {"id": f"{did}/operations/{op['operationId']}", "operationId": op["operationId"],
            "properties": op["properties"]}


def create_app(engine: Engine, tokens: set[str]) -> FastAPI:
    app = FastAPI(title="cloudhpc rehearsal: Azure Resource Manager", docs_url=None,
                  redoc_url=None, openapi_url=None)

    @app.api_route("/{path:path}", methods=["GET", "PUT", "DELETE", "HEAD", "PATCH", "POST"])
    async def dispatch(path: str, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in tokens:
            return _error(ArmError(401, "InvalidAuthenticationToken",
                                   "The access token is invalid."))
        if "api-version" not in request.query_params:
            return _error(ArmError(400, "MissingApiVersionParameter",
                                   "The api-version query parameter (?api-version=) is "
                                   "required for all requests."))
        body: dict[str, Any] = {}
        if request.method in ("PUT", "PATCH", "POST"):
            raw = await request.body()
            body = (await request.json()) if raw else {}
        try:
            return _route("/" + unquote(path), request, body)
        except ArmError as exc:
            return _error(exc)

    def _route(path: str, request: Request, body: dict[str, Any]) -> Response:
        method = request.method
        op = OPERATION.match(path)
        if op:  # an asynchronous operation's status (Azure-AsyncOperation)
            status = engine.operations.get(op.group(1))
            if status is None:
                raise ArmError(404, "NotFound", "no such operation")
            return JSONResponse({"name": op.group(1), **status},
                                headers={"Retry-After": "1"})
        m = GROUP.match(path)
        if not m:
            raise ArmError(404, "InvalidResourceType", f"no such path: {path}")
        sub, rg = m.group(1), m.group(2)
        rest = path[m.end():]
        if rest in ("", "/"):
            if method == "HEAD":
                try:
                    engine.group(sub, rg)
                    return Response(status_code=204)
                except ArmError:
                    return Response(status_code=404)
            if method == "PUT":
                return JSONResponse(engine.put_group(sub, rg, body), status_code=201)
            if method == "DELETE":
                engine.delete_group(sub, rg)
                return Response(status_code=200)
            return JSONResponse(engine.group(sub, rg))
        group_id = engine.group(sub, rg)["id"]
        if rest.lower() == "/resources":
            found = engine.in_group(group_id)
            wanted = _tag_filter(request.query_params.get("$filter", ""))
            if wanted:
                found = [r for r in found if (r.get("tags") or {}).get(wanted[0]) == wanted[1]]
            return JSONResponse({"value": found})
        d = DEPLOYMENT.match(rest)
        if d:
            did = f"{group_id}/providers/Microsoft.Resources/deployments/{d.group(1)}"
            if d.group(2):
                ops = engine.deployment(did)["properties"]["operations"]
                return JSONResponse({"value": [_operation(op, did) for op in ops]})
            if method == "PUT":
                out = engine.start_deployment(did, body)
                return JSONResponse(_deployment_view(out), status_code=201,
                                    headers={"Retry-After": "1"})
            if method == "DELETE":
                engine.delete_deployment(did)
                return Response(status_code=200)
            return JSONResponse(_deployment_view(engine.deployment(did)),
                                headers={"Retry-After": "1"})
        rid = group_id + rest
        segments = rest.strip("/").split("/")
        if method == "POST" and segments[-1].lower() == "restart":  # a VM's reboot
            engine.restart(rid.rsplit("/", 1)[0])
            return Response(status_code=200)
        if method == "POST" and segments[-1].lower() == "delete":  # scale-set instances
            engine.delete_instances(rid.rsplit("/", 1)[0], [str(i) for i in
                                                            body.get("instanceIds") or []])
            return Response(status_code=200)
        if len(segments) % 2 == 1:  # .../providers/NS/type: a collection
            rtype = type_of(rid + "/x")
            parent = rid.rsplit("/", 1)[0].lower()
            found = [r for r in engine.in_group(group_id, rtype)
                     if len(segments) == 3 or r["id"].lower().startswith(parent + "/")]
            return JSONResponse({"value": found})
        if method == "PATCH":
            return JSONResponse(engine.patch(rid, body))
        if method == "PUT":
            existed = rid.lower() in engine.resources
            made = engine.put(rid, body, wait=False)
            view = {k: v for k, v in made.items() if k != "_operation"}
            if "_operation" in made:
                base = f"{request.url.scheme}://{request.url.netloc}"
                url = (f"{base}/subscriptions/{sub}/providers/Microsoft.Compute/locations/"
                       f"{made.get('location') or 'eastus'}/operations/{made['_operation']}"
                       f"?api-version={request.query_params['api-version']}")
                return JSONResponse(view, status_code=201, headers={
                    "Azure-AsyncOperation": url, "Retry-After": "1"})
            return JSONResponse(view, status_code=200 if existed else 201)
        if method == "DELETE":
            return Response(status_code=200 if engine.delete(rid) else 204)
        if method == "HEAD":
            return Response(status_code=204 if rid.lower() in engine.resources else 404)
        return JSONResponse(engine.get(rid))

    return app


def _deployment_view(d: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in d["properties"].items() if k != "operations"}
    return {**d, "properties": props}
