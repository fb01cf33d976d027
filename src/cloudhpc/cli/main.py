"""The `cloudhpc` command (Typer + Rich)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cloudhpc import sizes as size_table
from cloudhpc.cli import cloud as cloud_cli
from cloudhpc.cli import jobs as jobs_cli
from cloudhpc.cli import ops as ops_cli
from cloudhpc.cli import remote as remote_cli
from cloudhpc.cli import storage as storage_cli
from cloudhpc.cli.output import emit_json, err, out, report_error, table
from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError, TemplateError
from cloudhpc.state import Store
from cloudhpc.template import Level, Template
from cloudhpc.template.loader import check, load, parse_yaml, read_text

app = typer.Typer(help="Declare an HPC cluster once; bring it up locally or on Azure.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
jobs_cli.register(app)
ops_cli.register(app)
storage_cli.register(app)
cloud_cli.register(app)
app.add_typer(remote_cli.tokens, name="token")


@app.callback()
def main_options(
    remote: Annotated[str | None, typer.Option(  # noqa: UP007
        "--remote", help="work through a cluster's API at this URL (or $CLOUDHPC_REMOTE)")
    ] = None,
    token: Annotated[str | None, typer.Option(  # noqa: UP007
        "--token", help="API token for --remote (or $CLOUDHPC_TOKEN)")] = None,
    fingerprint: Annotated[str | None, typer.Option(  # noqa: UP007
        "--fingerprint", help="SHA-256 fingerprint of the API's certificate, as `token "
        "create` printed it (or $CLOUDHPC_FINGERPRINT)")] = None,
) -> None:
    """Declare an HPC cluster once; bring it up locally or on Azure."""
    remote_cli.configure(remote, token, fingerprint)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
ClusterOpt = Annotated[str | None, typer.Option("-c", "--cluster",  # noqa: UP007
                                                   help="cluster name (optional if only one)")]


@app.command()
def validate(template: Path, as_json: JsonOpt = False) -> None:
    """Check a template: every problem with field path, line and fix; exit 2 on errors."""
    try:
        data, lines = parse_yaml(read_text(template), str(template))
    except OSError as exc:
        raise CloudHPCError(f"cannot read {template}: {exc.strerror}", "check the path") from None
    running = [(r.name, r.cidr) for r in Store().clusters()] if _can_read_state() else []
    _, findings = check(data, lines, running)
    errors = [f for f in findings if f.level is Level.ERROR]
    if as_json:
        emit_json({"template": str(template), "valid": not errors,
                   "findings": [f.as_dict() for f in findings]})
    else:
        for f in findings:
            color = "red" if f.level is Level.ERROR else "yellow"
            (err if f.level is Level.ERROR else out).print(
                f"[{color}]{f.level.value}[/{color}]: {template}: {f}", highlight=False,
                soft_wrap=True)
        if not errors:
            out.print(f"{template}: valid" + (f" ({len(findings)} warning(s))" if findings else ""))
    if errors:
        raise typer.Exit(2)


def _can_read_state() -> bool:
    try:
        Store()
    except OSError:
        return False
    return True


@app.command()
def schema() -> None:
    """Print the template's JSON Schema."""
    emit_json(Template.model_json_schema())


@app.command()
def sizes(as_json: JsonOpt = False) -> None:
    """List the VM sizes templates may use."""
    rows = list(size_table.table().values())
    if as_json:
        emit_json([s.__dict__ for s in rows])
        return
    table("VM sizes", ["name", "vCPUs", "memory GiB", "RDMA", "family"],
          [(s.name, s.vcpus, s.memory_gib, "yes" if s.rdma else "", s.family) for s in rows])


@app.command()
def up(template: Path, as_json: JsonOpt = False,
       provider: Annotated[str | None, typer.Option(  # noqa: UP007
           help="local or azure (default: the template's)")] = None,
       dry_run: Annotated[bool, typer.Option(
           "--dry-run", help="azure: print what would be created, change nothing")] = False,
       subscription: Annotated[str | None, typer.Option(  # noqa: UP007
           help="azure: subscription id (default: $AZURE_SUBSCRIPTION_ID)")] = None,
       resource_group: Annotated[str | None, typer.Option(  # noqa: UP007
           help="azure: resource group (default: cloudhpc-NAME)")] = None,
       ssh_key: Annotated[str | None, typer.Option(  # noqa: UP007
           help="azure: SSH public key file of the admin user")] = None,
       image_id: Annotated[str | None, typer.Option(  # noqa: UP007
           help="azure: resource id of the node image (built with Packer from `cloudhpc "
           "image export`)")] = None,
       rehearse: Annotated[bool, typer.Option(
           "--rehearse", help="act the Azure deployment out on this machine: the exported "
           "template through the Azure SDK, VMs as sandboxes running real cloud-init")] = False,
       rehearse_capacity: Annotated[list[str] | None, typer.Option(  # noqa: UP007
           "--rehearse-capacity", help="with --rehearse: SIZE=N, at most N VMs of that size "
           "(the next fails late with AllocationFailed, as in a region short of capacity)")
       ] = None,
       ) -> None:
    """Bring a cluster up from a template (a no-op if it is already up unchanged)."""
    model, _ = load(template, provider="azure" if rehearse else provider)
    if rehearse:
        _up_rehearsal(model, as_json, _capacity(rehearse_capacity or []))
        return
    if model.provider == "azure":
        _up_azure(model, as_json, dry_run, subscription, resource_group, ssh_key, image_id)
        return
    if dry_run:
        raise CloudHPCError("--dry-run is for provider azure",
                            hint="a local cluster takes a second: `cloudhpc up` then `down`")
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=as_json or not err.is_terminal) as bar:
        task = bar.add_task("starting", total=5)

        def progress(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        cluster = Cluster.up(template, progress=progress)
    nodes = cluster.status()
    if as_json:
        emit_json({"cluster": cluster.name, "nodes": [n.as_dict() for n in nodes]})
        return
    out.print(f"cluster [bold]{cluster.name}[/bold] is up: "
              f"{len([n for n in nodes if n.role == 'compute' and n.state == 'idle'])} compute "
              f"node(s) idle. Try: cloudhpc submit examples/jobs/mpi_pi.sh --nodes 2 --wait")


def _capacity(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        size, _, count = item.partition("=")
        if not size or not count.isdigit():
            raise CloudHPCError(f"--rehearse-capacity {item!r} is not SIZE=N",
                                hint="e.g. --rehearse-capacity Standard_HB120rs_v3=1")
        out[size] = int(count)
    return out


def _up_rehearsal(model: Template, as_json: bool, capacity: dict[str, int]) -> None:
    from cloudhpc.rehearse import run

    def say(what: str) -> None:
        if not as_json:
            err.print(f"rehearsal: {what}")

    outputs = run.up(model, Store(), say, capacity)
    if as_json:
        emit_json({"cluster": model.name, "rehearsal": True, "outputs": outputs})
    else:
        out.print(f"cluster [bold]{model.name}[/bold] rehearsed: head ready after "
                  f"{outputs['headReadySeconds']} s ({outputs}). This is not Azure: see the "
                  "README's rehearsal section for what it checks and what it cannot.")


def _up_azure(model: Template, as_json: bool, dry_run: bool, subscription: str | None,
              resource_group: str | None, ssh_key: str | None, image_id: str | None) -> None:
    from cloudhpc.azure import deploy, service

    if dry_run:
        planned = deploy.dry_run(model)
        if as_json:
            emit_json({"cluster": model.name, "would_create": planned})
        else:
            table(f"{model.name} on Azure would create", ["type", "name"],
                  [(r["type"], r["name"]) for r in planned])
        return
    target = service.target(model, subscription, resource_group)
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=as_json or not err.is_terminal) as bar:
        task = bar.add_task("deploying", total=1)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, description=what, completed=done, total=total)

        outputs = service.up(target, Store(), ssh_key, progress, image_id=image_id)
    if as_json:
        emit_json({"cluster": model.name, "outputs": outputs})
    else:
        out.print(f"cluster [bold]{model.name}[/bold] deployed to resource group "
                  f"{target.azure.resource_group}: {outputs}")


@app.command()
def down(cluster: ClusterOpt = None,
         name: Annotated[str | None, typer.Argument(help="cluster name")] = None,  # noqa: UP007
         ) -> None:
    """Remove a cluster and everything it created (idempotent; also after a crashed up)."""
    target = name or cluster
    store = Store()
    if target is not None and store.cluster(target) is None:
        removed = Cluster.remove_unrecorded(target, store)
        if removed:
            out.print(f"cluster {target} had no record; removed what it left: "
                      f"{', '.join(removed)}")
        else:
            out.print(f"no cluster named '{target}': nothing to do")
        return
    c = Cluster.get(target, store)
    if c.record.provider == "azure":
        from cloudhpc.azure import service
        from cloudhpc.rehearse import run

        if run.is_rehearsal(c.record):
            removed = run.down(c.record, store)
            out.print(f"rehearsed cluster {c.name} removed ({len(removed)} resource(s))")
            return

        removed = service.down(c.record, store)
        out.print(f"cluster {c.name} removed from Azure ({len(removed)} resource(s))")
        return
    c.down()
    out.print(f"cluster {c.name} removed")


@app.command("list")
def list_clusters(as_json: JsonOpt = False) -> None:
    """List the clusters on this machine."""
    records = Cluster.known()
    if as_json:
        emit_json([{"name": r.name, "provider": r.provider, "status": r.status,
                    "network": r.cidr} for r in records])
        return
    table("clusters", ["name", "provider", "status", "network"],
          [(r.name, r.provider, r.status, r.cidr) for r in records])


@app.command()
def status(cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """Nodes of a cluster with their state (Slurm's view merged with the provider's)."""
    far = remote_cli.remote()
    if far is not None:
        rows = far.status()
        if as_json:
            emit_json({"cluster": far.url, "nodes": rows})
        else:
            table(f"cluster at {far.url}", ["node", "role", "node set", "address", "CPUs",
                                            "state", "reason"],
                  [(n["name"], n["role"], n["nodeset"], n["address"], n["cpus"], n["state"],
                    n["reason"]) for n in rows])
        return
    c = Cluster.get(cluster)
    nodes = c.status()
    if as_json:
        emit_json({"cluster": c.name, "status": c.record.status,
                   "nodes": [n.as_dict() for n in nodes]})
        return
    table(f"cluster {c.name} ({c.record.status}, {c.plan.cidr})",
          ["node", "role", "node set", "address", "CPUs", "state", "reason"],
          [(n.name, n.role, n.nodeset, n.address, n.cpus, n.state, n.reason) for n in nodes])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(ctx: typer.Context, node: str, cluster: ClusterOpt = None) -> None:
    """Run a command inside a node, like ssh: cloudhpc exec NODE -- CMD ..."""
    argv = [a for a in ctx.args if a != "--"] or ["/bin/bash", "-l"]
    c = Cluster.get(cluster)
    full = c.node_argv(node, argv)
    from cloudhpc.cluster import NODE_ENV

    env = {**NODE_ENV, "TERM": os.environ.get("TERM", "xterm")}
    sys.stdout.flush()
    c.runner.replace(full, env)


@app.command()
def shell(node: Annotated[str | None, typer.Argument(  # noqa: UP007
              help="node (default: the first login node, or the head without one)")] = None,
          user: Annotated[str | None, typer.Option(  # noqa: UP007
              "--user", "-u", help="Unix user (default: root); made if missing, with a home "
              "in /home, which every node shares")] = None,
          cluster: ClusterOpt = None) -> None:
    """An interactive login shell on a node (a login node by default, or the head), like ssh
    to a cluster's login node."""
    c = Cluster.get(cluster)
    full = c.shell_argv(node or c.login_node, user)
    from cloudhpc.cluster import NODE_ENV

    env = {**NODE_ENV, "TERM": os.environ.get("TERM", "xterm")}
    sys.stdout.flush()
    c.runner.replace(full, env)


def run() -> None:
    try:
        app()
    except TemplateError as exc:
        sys.exit(report_error(exc))
    except CloudHPCError as exc:
        sys.exit(report_error(exc))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


__all__ = ["app", "run", "json"]
