"""Operations commands: events (the cluster's story) and chaos (fault injection)."""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict
from typing import Annotated, Any

import typer

from cloudhpc.cli.output import emit_json, err, out, table
from cloudhpc.cluster import Cluster

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
ClusterOpt = Annotated[str | None, typer.Option("-c", "--cluster",  # noqa: UP007
                                                   help="cluster name (optional if only one)")]

chaos = typer.Typer(help="Inject faults: kill a node or one of its daemons.",
                    no_args_is_help=True)


def _detail(event: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "kind"))


def _line(event: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
    return f"{stamp}.{int(event['time'] % 1 * 1000):03d}  {event['kind']:<18} {_detail(event)}"


def register(app: typer.Typer) -> None:
    app.add_typer(chaos, name="chaos")

    @app.command()
    def events(cluster: ClusterOpt = None, as_json: JsonOpt = False,
               follow: Annotated[bool, typer.Option("--follow", "-f",
                                                    help="keep printing new events")] = False,
               since: Annotated[float, typer.Option(help="only the last SECONDS")] = 0.0,
               ) -> None:
        """The cluster's event log: nodes requested, launched, registered, suspended,
        failed, replaced; jobs submitted, started, ended."""
        log = Cluster.get(cluster).events
        start = time.time() - since if since else 0.0
        if follow:
            try:
                for event in log.follow(start):
                    sys.stdout.write((json.dumps(event) if as_json else _line(event)) + "\n")
                    sys.stdout.flush()
            except KeyboardInterrupt:
                return
        found = log.read(start)
        if as_json:
            emit_json(found)
            return
        table("events", ["time", "kind", "detail"],
              [(_line(e)[:12], e["kind"], _detail(e)) for e in found])

    @app.command()
    def scale(nodeset: str,
              min_nodes: Annotated[int | None,
                                   typer.Option("--min", help="static nodes")] = None,
              max_nodes: Annotated[int | None,
                                   typer.Option("--max", help="most nodes")] = None,
              cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
        """Change a node set's min/max on a running cluster, keeping running and queued
        jobs."""
        result = Cluster.get(cluster).scale(nodeset, min_nodes, max_nodes)
        if as_json:
            emit_json(result)
        else:
            out.print(f"node set {nodeset}: min {result['min']}, max {result['max']}"
                      + (f"; removed {', '.join(result['removed'])}" if result["removed"]
                         else ""))

    @chaos.command("kill-node")
    def kill_node(node: str, cluster: ClusterOpt = None) -> None:
        """Make NODE vanish abruptly, like a VM losing power."""
        pids = Cluster.get(cluster).kill_node(node)
        out.print(f"killed {len(pids)} process(es) of node {node}")

    @chaos.command("kill-daemon")
    def kill_daemon(node: str, daemon: str, cluster: ClusterOpt = None) -> None:
        """Kill one daemon of NODE (slurmctld, slurmd, munged, reconciler), or the host's
        control plane: `chaos kill-daemon control-plane control`."""
        pid = Cluster.get(cluster).kill_daemon(node, daemon)
        out.print(f"killed {daemon} (pid {pid}) on {node}")

    @chaos.command("soak")
    def soak(cluster: ClusterOpt = None,
             minutes: Annotated[float, typer.Option(min=0.1, max=24 * 60,
                                                    help="how long faults are injected")] = 3,
             seed: Annotated[int | None, typer.Option(  # noqa: UP007
                 help="fixes faults, times and jobs (printed first)")] = None,
             rate: Annotated[float, typer.Option(min=0.1, max=60,
                                                 help="faults per minute, on average")] = 6,
             as_json: JsonOpt = False) -> None:
        """Random faults (nodes, every daemon, control plane, API) at random times while
        jobs stream in through the CLI and the API; then a ledger of every accepted job.
        Exit 1 if a job was lost, duplicated or shown under a wrong id."""
        from cloudhpc.soak import Soak

        c = Cluster.get(cluster)
        seed = seed if seed is not None else random.randrange(1, 10**6)
        err.print(f"soak seed {seed} (--seed {seed} repeats it)")
        ledger = Soak(c, seed, minutes, rate, say=lambda line: err.print(line)).run()
        if as_json:
            emit_json({**asdict(ledger), "ok": ledger.ok})
        else:
            table(f"soak of {c.name}, seed {seed}, {minutes:g} min", ["", "jobs"],
                  [("submitted", ledger.submissions), ("accepted", ledger.accepted),
                   ("not accepted (caller told)", ledger.not_accepted),
                   ("completed once", ledger.completed_once),
                   ("failed with a reason", ledger.failed_with_reason),
                   ("lost", ledger.lost), ("duplicated", ledger.duplicated),
                   ("shown under a wrong id", ledger.wrong_id),
                   ("faults injected", sum(1 for f in ledger.faults if f["done"]))])
            for why, count in ledger.refusals.items():
                err.print(f"  not accepted ({count}): {why}")
            for p in ledger.problems:
                err.print(f"  job {p['job']} ({p['via']}): {p['problem']} "
                          + " ".join(f"{k}={v}" for k, v in p.items()
                                     if k not in ("job", "via", "problem", "marker")))
        raise typer.Exit(0 if ledger.ok else 1)
