"""The cluster facade: every front end (CLI, Python API, the REST API's workers) goes through
`Cluster`. It wires the collaborators — the provider backend, the Slurm client, the job
service, the state store, the event log — and each does the work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudhpc import lifecycle, live, providers
from cloudhpc.errors import (
    CloudHPCError,
    ClusterExists,
    ClusterNotFound,
    CommandError,
    NodeNotFound,
    StorageError,
)
from cloudhpc.events import EventKind, EventLog
from cloudhpc.jobs import users
from cloudhpc.jobs.model import Job
from cloudhpc.jobs.request import JobRequest
from cloudhpc.jobs.service import JobService, Submitter
from cloudhpc.jobs.submissions import Submissions
from cloudhpc.node import bootstrap
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import Plan, Role, make_plan
from cloudhpc.providers.base import Backend, NodeState
from cloudhpc.report import DEFAULT_SINCE, By, ReportError, since_time, until_time
from cloudhpc.report import report as make_report
from cloudhpc.runner import BASE_PATH, Result, Runner
from cloudhpc.slurm import accounting
from cloudhpc.slurm.accounting import Associations
from cloudhpc.slurm.client import SlurmClient
from cloudhpc.state import ClusterRecord, Store
from cloudhpc.storage.account import BlobAccount
from cloudhpc.storage.blob import BlobStore
from cloudhpc.storage.urls import StageIn, StageOut
from cloudhpc.template import Template, load

NODE_ENV = {"PATH": BASE_PATH, "HOME": "/root", "LANG": "C.UTF-8",
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@dataclass(frozen=True)
class NodeStatus:
    name: str
    role: str
    nodeset: str
    address: str
    state: str
    cpus: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Cluster:
    """A cluster known to this machine's state store."""

    def __init__(self, record: ClusterRecord, store: Store, runner: Runner | None = None,
                 on_head: bool = False) -> None:
        self.store = store
        self.runner = runner or Runner()
        self.on_head = on_head
        self._load(record)

    def _load(self, record: ClusterRecord) -> None:
        self.record = record
        self.template = Template.model_validate(record.template)
        self.plan: Plan = make_plan(self.template)
        self.dir = ClusterDir.of(record.name, self.store.path.parent)
        if record.provider != "local" and (self.dir.node("head") / "node.json").exists():
            self.on_head = True  # a cloud cluster's own head (its bootstrap wrote that spec)
        self._backend = providers.backend_for(self.template, self.plan, self.dir, self.runner)
        self.slurm = SlurmClient(self.exec_head)
        self.associations = Associations(self.slurm, self.plan.accounting)
        self.service = JobService(self.name, self.plan, self.dir, self.slurm, self.store,
                                  self.events, self.exec_head_unchecked, lambda: self.storage,
                                  Submissions(self.store.path, self.name), self.associations)

    def _backend_of(self, template: Template, plan: Plan) -> Backend:
        backend = providers.backend_for(template, plan, self.dir, self.runner)
        if backend is None:
            self._local_only()
        assert backend is not None
        return backend

    @property
    def backend(self) -> Backend:
        """The provider backend of a cluster this machine brings up itself."""
        if self._backend is None:
            self._local_only()
        assert self._backend is not None
        return self._backend

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def api_url(self) -> str:
        """The head's REST API (https with the cluster's own certificate unless the
        template turned it off)."""
        return self.plan.api_url

    # -- lookup -------------------------------------------------------------------------
    @classmethod
    def get(cls, name: str | None = None, store: Store | None = None) -> Cluster:
        store = store or Store()
        records = store.clusters()
        if name is None:
            if len(records) == 1:
                return cls(records[0], store)
            if not records:
                raise ClusterNotFound("no cluster exists",
                                      hint="create one with `cloudhpc up TEMPLATE`")
            names = ", ".join(r.name for r in records)
            raise ClusterNotFound(f"several clusters exist ({names})",
                                  hint="name one with -c/--cluster NAME")
        record = store.cluster(name)
        if record is None:
            raise ClusterNotFound(f"no cluster named '{name}'",
                                  hint="see `cloudhpc list` for the clusters on this machine")
        return cls(record, store)

    @staticmethod
    def known(store: Store | None = None) -> list[ClusterRecord]:
        return (store or Store()).clusters()

    # -- lifecycle ----------------------------------------------------------------------
    @classmethod
    def up(cls, source: str | Path | dict[str, Any] | Template,
           progress: lifecycle.Progress | None = None, store: Store | None = None,
           runner: Runner | None = None) -> Cluster:
        lifecycle.check_host()
        store = store or Store()
        with lifecycle.host_lock():
            others = [(r.name, r.cidr) for r in store.clusters()]
            template, _ = load(source, running=others)
            if template.provider != "local":
                raise CloudHPCError(
                    f"this version cannot deploy to {template.provider} by itself yet",
                    hint="export an ARM template with `cloudhpc export TEMPLATE -o DIR` and "
                    "deploy it with `az deployment group create` (see the README's Azure "
                    "section), or set provider: local")
            data = template.model_dump(mode="json")
            existing = store.cluster(template.name)
            if existing is not None:
                if existing.template != data:
                    raise ClusterExists(
                        f"cluster '{template.name}' already exists with another template",
                        hint=f"run `cloudhpc down -c {template.name}` first, or pick a new name")
                cluster = cls(existing, store, runner)
                if existing.status == "running":
                    if not cluster.healthy():  # repair: relaunch what is missing
                        lifecycle.bring_up(cluster.plan, cluster.dir, cluster.backend,
                                           cluster.slurm, progress or lifecycle._noop,
                                           cleanup=False)
                    return cluster
            store.put_cluster(template.name, template.provider, "creating", data,
                              template.network.cidr)
            cluster = cls(store.cluster(template.name), store, runner)  # type: ignore[arg-type]
            try:
                lifecycle.bring_up(cluster.plan, cluster.dir, cluster.backend, cluster.slurm,
                                   progress or lifecycle._noop)
            except BaseException:
                # the rollback removed what it could; the record goes only if it all went,
                # so that `down NAME` can finish the job after a second Ctrl-C
                if not cluster.backend.leftovers() and not cluster.dir.root.exists():
                    store.delete_cluster(template.name)
                else:
                    store.set_status(template.name, "failed")
                raise
            store.set_status(template.name, "running")
            if cluster.plan.provider == "local":
                accounting.make_spare(cluster.dir)  # the next new cluster's database
            return cluster

    def down(self) -> None:
        with lifecycle.host_lock(), lifecycle.no_interrupts():
            self.store.set_status(self.name, "deleting")
            lifecycle.tear_down(self.plan, self.dir, self.backend)
            self.store.delete_cluster(self.name)  # its tokens, containers and jobs go too

    @staticmethod
    def remove_unrecorded(name: str, store: Store | None = None) -> list[str]:
        """`down NAME` for a cluster the state store does not know (a second Ctrl-C during
        `up` once removed the record first): whatever it left; returns what was removed."""
        store = store or Store()
        with lifecycle.host_lock(), lifecycle.no_interrupts():
            return providers.remove_unrecorded(name, ClusterDir.of(name, store.path.parent),
                                               [r.name for r in store.clusters()])

    def healthy(self) -> bool:
        nodes = self.backend.nodes()
        return self.backend.control_plane_running() and all(
            nodes[n.name].state is NodeState.RUNNING for n in self.plan.static_nodes())

    # -- nodes --------------------------------------------------------------------------
    def _local_only(self) -> None:
        if self.record.provider != "local":
            raise CloudHPCError(f"cluster '{self.name}' runs on {self.record.provider}: this "
                                "machine cannot reach into its nodes",
                                hint="use its head's API: cloudhpc --remote URL --token T ... "
                                "(`cloudhpc down` still works from here)")

    def node_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        return self.backend.enter(node, argv)

    @property
    def login_node(self) -> str:
        """Where users log in: the first login node, or the head when there is none."""
        login = self.plan.login()
        return login[0].name if login else "head"

    def shell_argv(self, node: str = "head", user: str | None = None) -> list[str]:
        """The command line of a login shell on NODE as USER (root if None). The user is
        made if missing (an ordinary account: never root or a system account) with a home
        under /home, which every node shares."""
        if user is None:
            return self.node_argv(node, ["/bin/bash", "-l"])
        account = users.ensure_user(user, self.dir.homes)
        self.associations.ensure(account.pw_name)  # Slurm runs jobs of associated users only
        return self.node_argv(node, ["runuser", "-l", account.pw_name])

    def give_association(self, user: str) -> str | None:
        """A new token's user gets its Unix account, home and Slurm association now; the
        account's name, or None if that must wait for its first job (accounting off, a
        cluster this machine cannot reach into, slurmdbd not answering)."""
        if not self.plan.accounting.enabled or self.record.provider != "local":
            return None
        try:
            users.ensure_user(user, self.dir.homes)
            self.associations.ensure(user)
        except CloudHPCError:
            return None
        return self.associations.account_of(user)

    def exec(self, node: str, argv: Sequence[str], check: bool = False,
             timeout: float | None = None) -> Result:
        return self.runner.run(self.node_argv(node, argv), check=check, env=NODE_ENV,
                               timeout=timeout)

    def exec_head(self, argv: Sequence[str], check: bool = True) -> Result:
        # already in the head's namespaces (its API daemon): no nsenter
        full = argv if self.on_head else self.node_argv("head", argv)
        return self.runner.run(full, env=NODE_ENV, timeout=60, check=check)

    def exec_head_unchecked(self, argv: Sequence[str]) -> Result:
        """Run argv on the head node; a failure (the head's too) is returned, not raised."""
        try:
            return self.exec_head(argv, check=False)
        except CloudHPCError as exc:
            return Result(list(argv), -1, "", exc.message)

    def status(self) -> list[NodeStatus]:
        provider = self.backend.nodes()
        try:
            slurm = {n.name: n for n in self.slurm.nodes()}
            answered = True
        except CloudHPCError:
            slurm, answered = {}, False
        out = []
        for spec in self.plan.nodes:
            info = provider[spec.name]
            state, reason = info.state.value, info.detail
            if spec.role is Role.COMPUTE:
                seen = slurm.get(spec.name)
                if spec.dynamic and info.state is NodeState.ABSENT:
                    down = seen is not None and seen.state == "down"
                    state = "down+powered_down" if down else "powered_down"
                    reason = seen.reason if seen is not None and down else ""
                elif info.state is NodeState.RUNNING:
                    state = seen.status if seen is not None else "unknown"
                    reason = seen.reason if seen is not None else ""
                elif info.state is NodeState.ABSENT:
                    state, reason = "down", "node does not exist"
            elif spec.role is Role.HEAD and info.state is NodeState.RUNNING and not answered:
                state, reason = "down", "slurmctld does not answer"
            out.append(NodeStatus(spec.name, spec.role.value, spec.nodeset, spec.address,
                                  state, spec.cpus, reason))
        return out

    # -- events and fault injection ----------------------------------------------------
    @property
    def events(self) -> EventLog:
        return EventLog(self.dir.events)

    def kill_node(self, node: str) -> list[int]:
        """Make a node vanish abruptly, like a VM losing power: every process in it dies."""
        self.node_argv(node, ["true"])  # validates the name and that it runs
        pids = self.backend.kill(node, None)
        self.events.emit(EventKind.CHAOS_KILL_NODE, node=node, processes=len(pids))
        return pids

    def kill_daemon(self, node: str, daemon: str) -> int:
        """Kill one supervised daemon; `control-plane control` is the host's control plane."""
        if node == "control-plane":
            names = ["control"]
        else:
            spec = self.plan.node(node)
            if spec is None:
                raise NodeNotFound(f"no node '{node}' in cluster '{self.name}'",
                                   hint="name a node from `cloudhpc status`, or control-plane")
            names = [d["name"] for d in bootstrap.daemons(spec, self.dir)]
        if daemon not in names:
            raise NodeNotFound(f"node '{node}' runs no daemon '{daemon}'",
                               hint=f"its daemons: {', '.join(names)}")
        pids = self.backend.kill(node, daemon)
        if not pids:
            raise NodeNotFound(f"{daemon} is not running on {node}")
        self.events.emit(EventKind.CHAOS_KILL_DAEMON, node=node, daemon=daemon, pid=pids[0])
        return pids[0]

    def scale(self, nodeset: str, min_nodes: int | None = None,
              max_nodes: int | None = None) -> dict[str, Any]:
        """Change a node set's min/max on the running cluster; jobs are kept."""
        with lifecycle.host_lock():
            result = live.scale(self.record, self.store, self.plan, self.dir, self._backend_of,
                                self.slurm, self.events, nodeset, min_nodes, max_nodes)
        fresh = self.store.cluster(self.name)
        if fresh is not None:
            self._load(fresh)
        return result

    # -- jobs ---------------------------------------------------------------------------
    def submit(self, script: str | Path | JobRequest, *, nodes: int | None = None,
               ntasks_per_node: int | None = None, partition: str | None = None,
               name: str | None = None, wait: bool = False,
               timeout: float | None = None, stage_in: Sequence[str | StageIn] = (),
               stage_out: Sequence[str | StageOut] = (), exe: Sequence[str] = (),
               user: str | None = None, describe: bool = False, admin: bool = False,
               token: str = "", time_limit: int | None = None) -> Job:
        """Submit a batch script (a path, or a JobRequest). stage_in:
        'blob://CONTAINER/PATH[:DEST]' fetched into the job's directory before it starts;
        stage_out: 'SRC:blob://CONTAINER/PATH' stored after it ends (also when it failed);
        exe: programs in blob storage fetched once into /shared and put on the job's PATH.
        USER, ADMIN, TOKEN: who submits (the API's callers). The job comes back as
        submitted (pending), like sbatch's answer, without asking Slurm again; DESCRIBE asks
        (one more Slurm call: a third of a submission's cost)."""
        request = JobRequest.of(script, nodes=nodes, ntasks_per_node=ntasks_per_node,
                                partition=partition, name=name,
                                stage_in=[str(s) for s in stage_in] or None,
                                stage_out=[str(s) for s in stage_out] or None,
                                exe=list(exe) or None, time_limit=time_limit)
        job = self.service.submit(request, Submitter(user, admin, token),
                                  describe=describe and not wait)
        return self.service.wait(job.job_id, timeout) if wait else job

    @property
    def storage(self) -> BlobStore:
        """The cluster's blob store (Azurite on the storage node, locally)."""
        if not self.dir.blob_account.exists():
            raise StorageError(f"cluster '{self.name}' has no blob store",
                               hint="set storage.blob.enabled: true in its template")
        return BlobStore(BlobAccount.load(self.dir.blob_account))

    def report(self, since: str = DEFAULT_SINCE, by: By = "user",
               uid: int | None = None) -> dict[str, Any]:
        """Usage from Slurm's accounting since SINCE, per user or account (only UID's jobs
        if given: a user's own report)."""
        if not self.plan.accounting.enabled:
            raise ReportError(f"cluster '{self.name}' has accounting disabled",
                              hint="set accounting.enabled: true in its template")
        start, until = since_time(since), until_time()
        try:
            records = self.slurm.usage(start, until)
        except CommandError as exc:
            raise ReportError(f"Slurm accounting did not answer: {exc.stderr.strip()}",
                              hint="slurmdbd may be starting: see logs/slurmdbd.log") from exc
        if uid is not None:
            records = [r for r in records if r.uid == uid]
        return make_report(records, self.plan, by, start, until)

    def jobs(self, history: bool = False) -> list[Job]:
        return self.service.jobs(include_history=history)

    def job(self, job_id: int) -> Job:
        return self.service.get(job_id)

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        return self.service.wait(job_id, timeout)

    def logs(self, job_id: int) -> str:
        return self.service.logs(job_id)

    def cancel(self, job_id: int) -> None:
        self.service.cancel(job_id)
