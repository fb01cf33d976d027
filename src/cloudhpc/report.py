"""Usage reports from Slurm's accounting: node-seconds, CPU-seconds and estimated cost per
user or account, and per day for the dashboard's plot. Pure functions over sacct's records
(slurm.client.UsageRecord) and the cluster's plan (which node is which size)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import hostlist

from cloudhpc.cost import hourly, prices
from cloudhpc.errors import CloudHPCError
from cloudhpc.plan import Plan
from cloudhpc.slurm.client import UsageRecord

By = Literal["user", "account"]
RELATIVE = re.compile(r"^(\d{1,5})([hdw])$")
ABSOLUTE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?)?$")
DEFAULT_SINCE = "30d"


class ReportError(CloudHPCError):
    pass


def since_time(since: str, now: float | None = None) -> str:
    """sacct's --starttime from '7d', '24h', '2w' or a date ('2026-11-01[T08:00[:00]]')."""
    now = time.time() if now is None else now
    m = RELATIVE.match(since)
    if m:
        seconds = int(m.group(1)) * {"h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - seconds))
    if ABSOLUTE.match(since):
        return since
    raise ReportError(f"--since {since!r} is not a time",
                      hint="use a count of hours, days or weeks (24h, 7d, 2w) or a date "
                      "(2026-11-01 or 2026-11-01T08:00)")


def until_time(now: float | None = None) -> str:
    """sacct's --endtime: a minute ahead. sacct takes 'now' to the second, and a job that
    ended in that second was left out."""
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now + 60))


@dataclass(frozen=True)
class JobUsage:
    record: UsageRecord
    node_seconds: int
    cpu_seconds: int
    cost: float


def job_usage(record: UsageRecord, plan: Plan) -> JobUsage:
    """Node-seconds, CPU-seconds and estimated cost of one job from its accounting record:
    its nodes (their sizes' list prices) for the seconds it held them."""
    unassigned = record.node_list in ("", "None assigned")
    names = [] if unassigned else hostlist.expand_hostlist(record.node_list)
    sizes = [node.size for node in (plan.node(n) for n in names) if node is not None]
    # Slurm's record of a job that started at once may name fewer nodes than it had (seen:
    # a 2-node job recorded with NodeList 'hpc-1' and no partition): the nodes it does not
    # name are priced as the ones it names
    if sizes and len(sizes) < record.nodes:
        sizes += [sizes[0]] * (record.nodes - len(sizes))
    per_hour = sum(hourly(s) for s in sizes if s)
    return JobUsage(record, record.nodes * record.seconds, record.cpus * record.seconds,
                    round(per_hour * record.seconds / 3600, 8))


def summarize(records: Iterable[UsageRecord], plan: Plan, by: By) -> list[dict[str, Any]]:
    """One row per user or account, most node-seconds first."""
    groups: dict[str, dict[str, Any]] = {}
    for record in records:
        use = job_usage(record, plan)
        key = record.user if by == "user" else (record.account or "(none)")
        row = groups.setdefault(key, {by: key, "jobs": 0, "node_seconds": 0,
                                      "cpu_seconds": 0, "cost": 0.0})
        row["jobs"] += 1
        row["node_seconds"] += use.node_seconds
        row["cpu_seconds"] += use.cpu_seconds
        row["cost"] = round(row["cost"] + use.cost, 6)
    return sorted(groups.values(), key=lambda r: (-r["node_seconds"], r[by]))


def daily(records: Iterable[UsageRecord], plan: Plan) -> list[dict[str, Any]]:
    """Node-seconds and cost per day (of each job's start), oldest first: the plot."""
    days: dict[str, dict[str, Any]] = {}
    for record in records:
        use = job_usage(record, plan)
        day = record.start[:10] if record.start[:4].isdigit() else "unknown"
        row = days.setdefault(day, {"day": day, "jobs": 0, "node_seconds": 0, "cost": 0.0})
        row["jobs"] += 1
        row["node_seconds"] += use.node_seconds
        row["cost"] = round(row["cost"] + use.cost, 6)
    return [days[d] for d in sorted(days)]


def report(records: list[UsageRecord], plan: Plan, by: By, since: str,
           until: str) -> dict[str, Any]:
    return {"cluster": plan.cluster, "since": since, "until": until, "by": by,
            "currency": prices().currency, "rows": summarize(records, plan, by),
            "days": daily(records, plan),
            "note": "node-seconds from Slurm accounting (sacct); cost at the VM sizes' list "
                    "prices (pay-as-you-go Linux)"}
