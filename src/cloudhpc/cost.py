"""Cost estimates from the shipped price table (data/prices.json: its date and source are
in the file): a template at min and at max, and finished jobs by node-seconds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from cloudhpc.template.schema import Template


@dataclass(frozen=True)
class PriceTable:
    per_hour: dict[str, float]
    currency: str
    region: str
    date: str
    source: str
    hours_per_month: int
    regions: list[str]


@cache
def prices() -> PriceTable:
    raw = json.loads(resources.files("cloudhpc").joinpath("data/prices.json").read_text())
    return PriceTable(raw["per_hour"], raw["currency"], raw["region"], raw["_date"],
                      raw["_source"], raw["hours_per_month"], raw["regions"])


def hourly(size: str) -> float:
    return prices().per_hour.get(size, 0.0)


def estimate(t: Template) -> dict[str, Any]:
    """Hourly cost with every node set at min and at max (the head node always runs), and
    the monthly cost of running at min all month."""
    table = prices()
    parts = [("head", t.head.size, 1, 1)] + [(ns.name, ns.size, ns.min, ns.max)
                                              for ns in t.compute]
    rows: list[dict[str, Any]] = [{"part": p, "size": s, "min": lo, "max": hi,
                                   "per_hour": hourly(s)} for p, s, lo, hi in parts]
    at_min = sum(lo * hourly(s) for _, s, lo, _ in parts)
    at_max = sum(hi * hourly(s) for _, s, _, hi in parts)
    return {
        "cluster": t.name, "currency": table.currency, "price_region": table.region,
        "region": t.azure.region, "prices_date": table.date,
        "parts": rows,
        "hourly_at_min": round(at_min, 4), "hourly_at_max": round(at_max, 4),
        "monthly_at_min": round(at_min * table.hours_per_month, 2),
        "monthly_at_max": round(at_max * table.hours_per_month, 2),
        "unpriced": sorted({r["size"] for r in rows if not r["per_hour"]}),
        "note": "VM list prices only (pay-as-you-go Linux); disks, storage and traffic "
                "excluded",
    }


def job_cost(node_sizes: list[str], seconds: float) -> tuple[float, float]:
    """Node-seconds and estimated cost of a job that ran SECONDS on nodes of these sizes."""
    node_seconds = len(node_sizes) * seconds
    cost = sum(hourly(s) for s in node_sizes) * seconds / 3600
    return round(node_seconds, 1), round(cost, 8)
