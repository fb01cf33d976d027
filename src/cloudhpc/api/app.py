"""The REST API a cluster's head node serves (OpenAPI at /openapi.json, dashboard at /).

Every route but /healthz needs `Authorization: Bearer <token>` (401 otherwise). Admin tokens
act on every job; user tokens see and act on their own jobs only (403 for others'). Reads come
from the cached view (ClusterView), never straight from Slurm; a submission is answered only
once Slurm has accepted the job (sbatch returned its id), so an accepted job is never lost."""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# dependencies are local to create_app.
import dataclasses
import pwd
import time
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from cloudhpc.api.limits import BodyLimit
from cloudhpc.api.tokens import Principal, TokenStore
from cloudhpc.api.view import UID, ClusterView
from cloudhpc.api.work import WorkerError, Workers
from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError, CommandError
from cloudhpc.jobs.model import Job
from cloudhpc.jobs.request import JobRequest
from cloudhpc.storage.access import AccessDenied, ContainerAccess
from cloudhpc.storage.access import Who as StorageWho
from cloudhpc.storage.urls import parse_blob_url

bearer = HTTPBearer(auto_error=False)
WEB = resources.files("cloudhpc").joinpath("web")


class ContainerRequest(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9]|-[a-z0-9]){1,61}[a-z0-9]?$",
                      description="3-63 lowercase letters, digits and single hyphens")


class GrantRequest(BaseModel):
    user: str = Field(pattern=r"^(\*|[a-z_][a-z0-9_-]{0,31})$",
                      description="a user name, or * for every user of the cluster")
    write: bool = False


class JobList(BaseModel):
    total: int
    jobs: list[Job]


class Problem(BaseModel):
    detail: str
    hint: str = ""


def create_app(cluster: Cluster, tokens: TokenStore, view: ClusterView | None = None,
               start_view: bool = True) -> FastAPI:
    view = view or ClusterView(cluster)
    workers = Workers(cluster)
    # no /docs or /redoc (their pages load scripts from a CDN); the schema needs a token
    app = FastAPI(title=f"cloudhpc API of cluster {cluster.name}", version="1",
                  description=__doc__, docs_url=None, redoc_url=None, openapi_url=None)
    access = ContainerAccess(cluster.store, cluster.name)
    if start_view:
        app.router.on_startup += [view.start, workers.start]
        app.router.on_shutdown += [view.stop, workers.stop]

    verified: dict[str, tuple[Principal, float]] = {}

    def verify(token: str) -> Principal | None:
        """Token check, remembered for 5 s (a revoked token stops working within 5 s)."""
        hit = verified.get(token)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        who = tokens.verify(cluster.name, token)
        if who is not None:
            try:
                who = dataclasses.replace(who, uid=pwd.getpwnam(who.user).pw_uid)
            except KeyError:
                return who  # made at its first submission; owns nothing yet (not kept)
            if len(verified) > 10000:
                verified.clear()
            verified[token] = (who, time.monotonic() + 5)
        return who

    async def principal(creds: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(bearer)]) -> Principal:
        """On the event loop, not in a thread: every request passes here, and a token is
        checked against the database at most once per 5 s."""
        who = verify(creds.credentials) if creds else None
        if who is None:
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        view.touch()
        return who

    Who = Annotated[Principal, Depends(principal)]

    def early_check(authorization: str | None) -> bool:
        """The token check for requests with a body, before the body is read."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        return verify(authorization[7:].strip()) is not None

    app.add_middleware(BodyLimit, check=early_check)

    JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Slurm job id")]

    async def find(job_id: int, who: Principal) -> Job | None:
        """Check the caller may see the job; returns the job when it had to ask Slurm for
        it (not in the view yet), so that callers need not ask again."""
        meta = view.snapshot.meta.get(job_id)
        job = None
        if meta is not None:
            uid = meta[UID]
        else:
            job = await workers.call("job", job_id)
            if job is None:
                raise HTTPException(404, f"no job {job_id}")
            uid = job.uid
        if not (who.admin or (uid >= 0 and uid == who.uid)):
            raise HTTPException(403, f"job {job_id} belongs to another user")
        return job

    @app.exception_handler(CloudHPCError)
    async def cloudhpc_error(request: Request, exc: CloudHPCError) -> JSONResponse:
        status = exc.status if isinstance(exc, WorkerError) else \
            503 if isinstance(exc, CommandError) else 400
        return JSONResponse({"detail": exc.message, "hint": exc.hint}, status_code=status)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        """Liveness without a token: is the API up, does Slurm answer."""
        snap = view.snapshot
        return {"ok": True, "slurm": snap.slurm_ok, "view_time": snap.taken}

    @app.get("/api/cluster", tags=["cluster"])
    async def get_cluster(who: Who) -> dict[str, Any]:
        snap = view.snapshot
        return {"name": cluster.name, "provider": cluster.template.provider,
                "network": cluster.template.network.cidr, "user": who.user,
                "admin": who.admin, "slurm": snap.slurm_ok, "view_time": snap.taken,
                "nodes": len(snap.nodes),
                "jobs": {"pending": len(snap.by_state.get("pending", [])),
                         "running": len(snap.by_state.get("running", []))}}

    @app.get("/api/nodesets", tags=["cluster"])
    async def nodesets(who: Who) -> list[dict[str, Any]]:
        snap = view.snapshot
        out = []
        for ns in cluster.template.compute:
            mine = [n for n in snap.nodes if n["nodeset"] == ns.name]
            out.append({"name": ns.name, "size": ns.size, "partition": ns.partition or ns.name,
                        "min": ns.min, "max": ns.max, "rdma": ns.rdma,
                        "idle_timeout": ns.idle_timeout,
                        "states": {s: sum(n["state"] == s for n in mine)
                                   for s in sorted({n["state"] for n in mine})}})
        return out

    @app.get("/api/nodes", tags=["cluster"], response_model=list[dict[str, Any]])
    async def nodes(who: Who) -> Response:
        return Response(view.snapshot.nodes_json, media_type="application/json")

    @app.get("/api/jobs", tags=["jobs"], response_model=JobList)
    async def jobs(who: Who, state: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=10000)] = 100,
                   offset: Annotated[int, Query(ge=0)] = 0) -> Response:
        """Jobs, newest first (a user token sees its own only)."""
        snap = view.snapshot
        picked = snap.by_state.get(state, []) if state else snap.order
        if not who.admin:
            meta, uid = snap.meta, who.uid
            picked = [i for i in picked if meta[i][UID] == uid]
        page = b",".join(snap.json[i] for i in picked[offset:offset + limit])
        body = b'{"total":%d,"jobs":[%s]}' % (len(picked), page)
        return Response(body, media_type="application/json")

    @app.post("/api/jobs", status_code=201, tags=["jobs"],
              responses={200: {"model": Job, "description": "the job an earlier request "
                               "with the same Idempotency-Key made"},
                         400: {"model": Problem}, 409: {"model": Problem},
                         503: {"model": Problem}})
    async def submit(req: JobRequest, who: Who, response: Response,
                     idempotency_key: Annotated[str | None, Header(
                         pattern=r"^[\x21-\x7e]{1,255}$",
                         description="retry-safe submission: the same key from the same "
                         "token within 24 h answers with the first job (200)")] = None,
                     ) -> Job:
        """Submit a batch script; answered once Slurm has the job. It runs as the token's
        Unix user (created on the cluster if needed)."""
        if idempotency_key is None:
            job: Job = await workers.call("submit", req, who.user, who.admin, who.token_id)
        else:
            job, made = await workers.call("submit_once", req, who.user, who.admin,
                                           who.token_id, idempotency_key)
            if not made:
                response.status_code = 200
        view.poke()
        return job

    @app.get("/api/jobs/{job_id}", tags=["jobs"],
             responses={403: {"model": Problem}, 404: {"model": Problem}})
    async def get_job(job_id: JobId, who: Who) -> Job:
        job = await find(job_id, who) or await workers.call("job", job_id)
        if job is None:  # left Slurm and its record between the two questions
            raise HTTPException(404, f"no job {job_id}")
        return job  # fresh: staging and cost details

    @app.get("/api/jobs/{job_id}/logs", tags=["jobs"],
             responses={403: {"model": Problem}, 404: {"model": Problem}})
    async def get_logs(job_id: JobId, who: Who) -> dict[str, Any]:
        await find(job_id, who)
        return {"job_id": job_id, "output": await workers.call("logs", job_id)}

    @app.delete("/api/jobs/{job_id}", status_code=202, tags=["jobs"],
                responses={403: {"model": Problem}, 404: {"model": Problem}})
    async def cancel(job_id: JobId, who: Who) -> dict[str, Any]:
        await find(job_id, who)
        await workers.call("cancel", job_id)
        view.poke()
        return {"job_id": job_id, "cancelled": True}

    @app.get("/api/report", tags=["accounting"])
    def usage_report(who: Who, since: Annotated[str, Query(max_length=32)] = "30d",
                     by: Literal["user", "account"] = "user") -> dict[str, Any]:
        """Usage from Slurm's accounting (node-seconds, CPU-seconds, estimated cost) per
        user or account and per day; a user token sees its own jobs only."""
        return cluster.report(since, by, None if who.admin else who.uid)

    @app.get("/api/events", tags=["events"])
    async def events(who: Who, since: float = 0.0,
               limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> list[dict[str, Any]]:
        found = [e for e in view.events if e["time"] > since]
        return found[-limit:]

    @app.get("/api/metrics", tags=["events"])
    async def metrics(who: Who) -> list[dict[str, Any]]:
        """Nodes up per node set and queue depth over time (the dashboard's plots)."""
        return list(view.samples)

    def caller(who: Principal) -> StorageWho:
        return StorageWho(who.user, who.admin)

    @app.get("/api/storage", tags=["storage"],
             responses={400: {"model": Problem}, 403: {"model": Problem}})
    def storage(who: Who, url: str | None = None) -> dict[str, Any]:
        """Containers you may read, or the blobs at blob://CONTAINER[/PATH]."""
        store = cluster.storage
        if url is None:
            return {"containers": access.visible(caller(who), store.containers())}
        address = parse_blob_url(url)
        if not access.can_read(caller(who), address.container):
            raise HTTPException(403, f"container '{address.container}' is not yours")
        return {"blobs": [e.__dict__ for e in store.ls(address)]}

    @app.post("/api/storage/containers", status_code=201, tags=["storage"],
              responses={400: {"model": Problem}, 409: {"model": Problem}})
    def make_container(req: ContainerRequest, who: Who) -> dict[str, Any]:
        """Create a container owned by the caller."""
        owner = access.owner(req.name)
        if owner is not None and owner != who.user:
            raise HTTPException(409, f"container '{req.name}' exists and is not yours")
        if owner is None and req.name in cluster.storage.containers():
            raise HTTPException(409, f"container '{req.name}' exists and is not yours")
        cluster.storage.mkdir(req.name)
        access.record(req.name, who.user)
        return {"name": req.name, "owner": who.user}

    @app.post("/api/storage/containers/{name}/grants", status_code=201, tags=["storage"],
              responses={403: {"model": Problem}})
    def grant(name: Annotated[str, Path(pattern=r"^[a-z0-9-]{3,63}$")], req: GrantRequest,
              who: Who) -> dict[str, Any]:
        """Share a container you own with a user (or * for every user), read or write."""
        try:
            access.grant(caller(who), name, req.user, req.write)
        except AccessDenied as exc:
            raise HTTPException(403, exc.message) from None
        return {"container": name, "user": req.user, "write": req.write}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(who: Who) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(WEB.joinpath("index.html").read_text())

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=str(WEB)), name="static")
    return app
