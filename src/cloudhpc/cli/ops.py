"""Operations commands: events (the cluster's story) and chaos (fault injection)."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer

from cloudhpc.cli.output import emit_json, out, table
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
