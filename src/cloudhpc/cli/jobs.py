"""Job commands: submit, jobs, job, logs, cancel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cloudhpc.cli.output import emit_json, err, out, table
from cloudhpc.cli.remote import target
from cloudhpc.errors import CloudHPCError
from cloudhpc.jobs.model import Job
from cloudhpc.jobs.request import JobRequest
from cloudhpc.jobs.wait import wait_until_done

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
ClusterOpt = Annotated[str | None, typer.Option("-c", "--cluster",  # noqa: UP007
                                                   help="cluster name (optional if only one)")]


def _when(stamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else "-"


def _show(job: Job) -> None:
    rows = [("id", job.job_id), ("name", job.name), ("state", job.state.value),
            ("reason", job.reason or "-"), ("partition", job.partition),
            ("nodes", job.nodes or "-"), ("tasks", job.tasks), ("user", job.user),
            ("submitted", _when(job.submit_time)), ("started", _when(job.start_time)),
            ("ended", _when(job.end_time)), ("exit code", job.exit_code),
            ("output", job.stdout or "-")]
    if job.node_seconds:
        rows.append(("node-seconds", f"{job.node_seconds:.0f}"))
        rows.append(("est. cost", f"{job.cost_usd:.4f} USD (list prices of its sizes)"))
    for phase in ("in", "out"):
        record = (job.staging or {}).get(phase)
        if record:
            moved = ", ".join(f"{t['source']} -> {t['dest']}"
                              + ("" if t.get("ok") else f" ({t.get('error', 'failed')})")
                              for t in record.get("transfers", []))
            rows.append((f"stage-{phase}", f"{record['state']}: {moved or '-'}"))
    table(f"job {job.job_id}", ["field", "value"], rows)


def register(app: typer.Typer) -> None:
    @app.command()
    def submit(
        script: Path,
        nodes: Annotated[int | None, typer.Option(help="number of nodes")] = None,  # noqa: UP007
        ntasks_per_node: Annotated[int | None,  # noqa: UP007
                                   typer.Option(help="tasks (MPI ranks) per node")] = None,
        partition: Annotated[str | None,  # noqa: UP007
                             typer.Option(help="partition (= node set)")] = None,
        name: Annotated[str | None, typer.Option(help="job name")] = None,  # noqa: UP007
        wait: Annotated[bool, typer.Option(help="wait for the end; print the output")] = False,
        stage_in: Annotated[list[str] | None, typer.Option(  # noqa: UP007
            "--stage-in", help="blob://CONTAINER/PATH[:DEST] fetched before the script "
            "starts (repeatable)")] = None,
        stage_out: Annotated[list[str] | None, typer.Option(  # noqa: UP007
            "--stage-out", help="SRC:blob://CONTAINER/PATH stored after the script, even if "
            "it failed (repeatable)")] = None,
        exe: Annotated[list[str] | None, typer.Option(  # noqa: UP007
            "--exe", help="program in blob storage, fetched once to /shared and put on the "
            "job's PATH (repeatable)")] = None,
        time_limit: Annotated[int | None, typer.Option(  # noqa: UP007
            help="minutes the job may run")] = None,
        cluster: ClusterOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Submit a batch script to Slurm (it runs in its own directory under /shared/jobs)."""
        request = JobRequest.of(script, nodes=nodes, ntasks_per_node=ntasks_per_node,
                                partition=partition, name=name, stage_in=stage_in or None,
                                stage_out=stage_out or None, exe=exe or None,
                                time_limit=time_limit)
        c = target(cluster)
        job = c.submit(request)
        if not wait:
            if as_json:
                emit_json(job.as_dict())
            else:
                out.print(f"submitted job {job.job_id}")
            return
        with err.status(f"job {job.job_id} {job.state.value}") as spinner:
            job = wait_until_done(c.job, job.job_id, on_change=lambda j: spinner.update(
                f"job {j.job_id} {j.state.value}" + (f" ({j.reason})" if j.reason else "")),
                first=0.2, longest=1.0)
        if as_json:
            emit_json({**job.as_dict(), "output": c.logs(job.job_id)})
        else:
            out.print(c.logs(job.job_id), end="", highlight=False, markup=False)
            err.print(f"job {job.job_id} {job.state.value} (exit code {job.exit_code})")
        raise typer.Exit(0 if job.state.value == "completed" else max(job.exit_code, 1))

    @app.command("jobs")
    def jobs_cmd(cluster: ClusterOpt = None, as_json: JsonOpt = False,
                 all: Annotated[bool, typer.Option("--all", help="include history")] = False,
                 ) -> None:
        """Queued, running and recently finished jobs."""
        c = target(cluster)
        found = c.jobs(history=all)
        if as_json:
            emit_json([j.as_dict() for j in found])
            return
        table(f"jobs of {c.name}", ["id", "name", "state", "reason", "partition", "nodes",
                                    "tasks", "submitted", "exit"],
              [(j.job_id, j.name, j.state.value, j.reason, j.partition, j.nodes, j.tasks,
                _when(j.submit_time), j.exit_code if j.done else "") for j in found])

    @app.command()
    def job(job_id: int, cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
        """One job in detail."""
        found = target(cluster).job(job_id)
        if as_json:
            emit_json(found.as_dict())
        else:
            _show(found)

    @app.command()
    def report(cluster: ClusterOpt = None, as_json: JsonOpt = False,
               since: Annotated[str, typer.Option(
                   help="from when: 24h, 7d, 2w or a date (2026-11-01)")] = "30d",
               by: Annotated[str, typer.Option(help="user or account")] = "user") -> None:
        """Usage from Slurm accounting: jobs, node-hours, CPU-hours, estimated cost."""
        if by not in ("user", "account"):
            raise CloudHPCError(f"--by {by!r} is not known", hint="use --by user or --by account")
        data = target(cluster).report(since, by)  # type: ignore[arg-type]
        if as_json:
            emit_json(data)
            return
        rows = [(r[by], r["jobs"], f"{r['node_seconds'] / 3600:.2f}",
                 f"{r['cpu_seconds'] / 3600:.2f}", f"{r['cost']:.4f}") for r in data["rows"]]
        table(f"usage of {data['cluster']} since {data['since']} by {by}",
              [by, "jobs", "node-hours", "CPU-hours", f"est. cost ({data['currency']})"], rows)
        out.print(data["note"], highlight=False)

    @app.command()
    def logs(job_id: int, cluster: ClusterOpt = None) -> None:
        """Print a job's output."""
        out.print(target(cluster).logs(job_id), end="", highlight=False, markup=False)

    @app.command()
    def cancel(job_id: int, cluster: ClusterOpt = None) -> None:
        """Cancel a queued or running job."""
        target(cluster).cancel(job_id)
        out.print(f"job {job_id} cancelled")
