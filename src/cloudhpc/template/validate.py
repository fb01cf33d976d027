"""Cross-field validators: small functions that return findings with a level and a fix."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterator

from cloudhpc import sizes
from cloudhpc.addressing import first_free, nodeset_share
from cloudhpc.template.findings import Finding, Level, Loc, line_of
from cloudhpc.template.schema import HPC_IMAGE, Template

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
NODESET_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
RESERVED_NODES = {"head", "storage"}
ADMIN_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
Lines = dict[Loc, int]
Validator = Callable[[Template, Lines, list[tuple[str, str]]], Iterator[Finding]]


def _f(level: Level, path: Loc, msg: str, hint: str, lines: Lines) -> Finding:
    return Finding(level, path, msg, hint, line_of(lines, path))


def cluster_name(t: Template, lines: Lines, running: list[tuple[str, str]]) -> Iterator[Finding]:
    if not NAME_RE.match(t.name) or t.name.endswith("-"):
        yield _f(Level.ERROR, ("name",), f"bad cluster name {t.name!r}",
                 "use 1-20 lowercase letters, digits or '-', starting with a letter", lines)


def nodesets(t: Template, lines: Lines, running: list[tuple[str, str]]) -> Iterator[Finding]:
    seen: dict[str, int] = {}
    for i, ns in enumerate(t.compute):
        base: Loc = ("compute", i)
        if not NODESET_RE.match(ns.name) or ns.name in RESERVED_NODES:
            yield _f(Level.ERROR, (*base, "name"), f"bad node set name {ns.name!r}",
                     "use 1-12 lowercase letters or digits, starting with a letter "
                     "('head' and 'storage' are reserved)", lines)
        if ns.name in seen:
            yield _f(Level.ERROR, (*base, "name"), f"duplicate node set name {ns.name!r} "
                     f"(also compute[{seen[ns.name]}])", "give every node set its own name",
                     lines)
        seen.setdefault(ns.name, i)
        if ns.min > ns.max:
            yield _f(Level.ERROR, (*base, "max"), f"must be >= min (got {ns.max} < {ns.min})",
                     f"set max to at least {ns.min}, or lower min", lines)
        if ns.partition is not None and not NODESET_RE.match(ns.partition):
            yield _f(Level.ERROR, (*base, "partition"), f"bad partition name {ns.partition!r}",
                     "use 1-12 lowercase letters or digits, starting with a letter", lines)
    logins: set[str] = set()
    for i, ls in enumerate(t.login):
        base = ("login", i)
        if not NODESET_RE.match(ls.name) or ls.name in RESERVED_NODES:
            yield _f(Level.ERROR, (*base, "name"), f"bad login node set name {ls.name!r}",
                     "use 1-12 lowercase letters or digits, starting with a letter "
                     "('head' and 'storage' are reserved)", lines)
        if ls.name in seen or ls.name in logins:
            yield _f(Level.ERROR, (*base, "name"), f"duplicate node set name {ls.name!r}",
                     "give every node set, login sets included, its own name", lines)
        logins.add(ls.name)
    for name in t.local.capacity:
        if name not in seen:
            yield _f(Level.ERROR, ("local", "capacity", name), f"no node set named {name!r}",
                     f"node sets: {', '.join(seen)}", lines)


def vm_sizes(t: Template, lines: Lines, running: list[tuple[str, str]]) -> Iterator[Finding]:
    items: list[tuple[Loc, str, bool]] = [(("head", "size"), t.head.size, False)]
    items += [(("compute", i, "size"), ns.size, ns.rdma) for i, ns in enumerate(t.compute)]
    for path, name, rdma in items:
        size = sizes.lookup(name)
        if size is None:
            near = sizes.suggest(name)
            hint = f"did you mean '{near}'?" if near else "run `cloudhpc sizes` for the list"
            yield _f(Level.ERROR, path, f"unknown VM size {name!r}", hint, lines)
        elif rdma and not size.rdma:
            yield _f(Level.ERROR, path, f"{name} has no RDMA (InfiniBand) but rdma: true",
                     "use an HB/HC/HX size such as Standard_HB120rs_v3, or set rdma: false",
                     lines)


def _network(t: Template) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(t.network.cidr, strict=True)
    except ValueError:
        return None
    return net if isinstance(net, ipaddress.IPv4Network) else None


def network(t: Template, lines: Lines, running: list[tuple[str, str]]) -> Iterator[Finding]:
    path: Loc = ("network", "cidr")
    net = _network(t)
    if net is None:
        yield _f(Level.ERROR, path, f"not an IPv4 network: {t.network.cidr!r}",
                 "write it like 198.18.0.0/24 (host bits zero)", lines)
        return
    share = nodeset_share(t.network.cidr, len(t.compute), t.provider)
    logins = sum(ls.count for ls in t.login)
    if t.compute and logins:
        last = net.network_address + first_free(t.provider) + 2 + (len(t.compute) - 1) * share \
            + t.compute[-1].max - 1
        if last >= net.broadcast_address - logins:
            yield _f(Level.ERROR, ("login",), f"no room for {logins} login node(s) at the end "
                     f"of {t.network.cidr}: compute[{len(t.compute) - 1}] "
                     f"({t.compute[-1].name}) reaches {last}",
                     "use a larger network, or a smaller max for that node set", lines)
    for i, ns in enumerate(t.compute):
        if ns.max > share:
            prefix = 32
            while nodeset_share(f"0.0.0.0/{prefix}", len(t.compute), t.provider) < ns.max:
                prefix -= 1
            yield _f(Level.ERROR, path, f"too small: compute[{i}] ({ns.name}) has max "
                     f"{ns.max} nodes but each of the {len(t.compute)} node set(s) owns "
                     f"{share} addresses of it (after the host, head and storage)",
                     f"use a /{prefix} or larger", lines)
    for other, cidr in running:
        if other != t.name and net.overlaps(ipaddress.ip_network(cidr)):
            yield _f(Level.ERROR, path, f"overlaps cluster '{other}' ({cidr})",
                     "pick another range, e.g. the next /24 in 198.18.0.0/15", lines)


def routes(t: Template, lines: Lines, running: list[tuple[str, str]]) -> Iterator[Finding]:
    """The network must not overlap a route of this machine (other than our own clusters)."""
    net = _network(t)
    if net is None or t.provider != "local":
        return
    ours = {ipaddress.ip_network(c) for _, c in running}
    for dest, dev in host_routes():
        if dest.prefixlen == 0 or dest in ours or dev.startswith("chb"):
            continue
        if net.overlaps(dest):
            yield _f(Level.ERROR, ("network", "cidr"),
                     f"overlaps this machine's route {dest} (dev {dev})",
                     "pick a range no local interface uses, e.g. in 198.18.0.0/15", lines)


def host_routes() -> list[tuple[ipaddress.IPv4Network, str]]:
    out = []
    try:
        with open("/proc/net/route") as fh:
            next(fh)
            for row in fh:
                dev, dest, _gw, _fl, _a, _b, _c, mask = row.split()[:8]
                d = ipaddress.IPv4Address(bytes.fromhex(dest)[::-1])
                m = ipaddress.IPv4Address(bytes.fromhex(mask)[::-1])
                out.append((ipaddress.IPv4Network(f"{d}/{m}", strict=False), dev))
    except OSError:
        pass
    return out


# An RDMA node set must share one InfiniBand fabric: one VM scale set in a single placement
# group, which Azure caps at 100 VMs.
PLACEMENT_GROUP_LIMIT = 100
RESERVED_ADMINS = {"admin", "administrator", "root", "guest", "user", "test", "azureuser1"}


def arm_limits(t: Template, lines: Lines) -> Iterator[Finding]:
    """Azure's template limits, on the template cloudhpc renders (cloudhpc.azure.limits)."""
    from cloudhpc.azure.arm import export
    from cloudhpc.azure.limits import check

    try:
        arm, _ = export(t)
    except (ValueError, KeyError) as exc:  # reported by the other checks
        del exc
        return
    for problem in check(arm):
        yield _f(Level.ERROR, ("compute",), f"the exported ARM template breaks an Azure "
                 f"limit: {problem}", "lower min, or use fewer node sets (Slurm starts the "
                 "other nodes when jobs need them)", lines)


def azure(t: Template, lines: Lines, running: list[tuple[str, str]]) -> Iterator[Finding]:
    """Checks that matter only when the cluster goes to Azure (provider: azure, or export)."""
    if t.provider != "azure":
        return
    from cloudhpc.cost import prices  # the price table holds the known regions

    az = t.azure
    regions = prices().regions
    if not az.region:
        yield _f(Level.ERROR, ("azure", "region"), "no Azure region in the template",
                 "add azure: {region: eastus} (any Azure region name)", lines)
    elif az.region not in regions:
        close = difflib.get_close_matches(az.region, regions, n=1)
        yield _f(Level.WARNING, ("azure", "region"), f"region {az.region!r} is not one "
                 "cloudhpc knows (prices are for eastus)",
                 f"did you mean {close[0]!r}?" if close else "check the region name", lines)
    for i, ns in enumerate(t.compute):
        if ns.rdma and ns.max > PLACEMENT_GROUP_LIMIT:
            yield _f(Level.ERROR, ("compute", i, "max"), f"RDMA node set {ns.name!r} has max "
                     f"{ns.max}, more than one placement group holds "
                     f"({PLACEMENT_GROUP_LIMIT} VMs)",
                     f"split it into node sets of at most {PLACEMENT_GROUP_LIMIT} that share "
                     "one partition", lines)
        if ns.rdma and ns.min > 0:
            yield _f(Level.ERROR, ("compute", i, "min"), f"RDMA node set {ns.name!r} has min "
                     f"{ns.min}: on Azure its nodes are instances of a Uniform scale set that "
                     "Slurm starts when jobs need them", "set min: 0 (jobs start the nodes; "
                     "idle_timeout keeps them for the next job)", lines)
    for key in ("ssh_cidrs", "api_cidrs"):
        for k, cidr in enumerate(getattr(az, key)):
            if cidr in ("*", "Internet", "Any"):
                yield _f(Level.WARNING, ("azure", key, k), f"{cidr!r} opens the head to the "
                         "whole internet", "list only your own networks", lines)
                continue
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                yield _f(Level.ERROR, ("azure", key, k), f"{cidr!r} is not a CIDR",
                         "write it like 203.0.113.0/24", lines)
                continue
            if net.prefixlen < 8:  # 0.0.0.0/0 and every spelling as wide as the internet
                yield _f(Level.WARNING, ("azure", key, k), f"{cidr} opens the head to "
                         f"{net.num_addresses:,} addresses (the whole internet or most of it)",
                         "list only your own networks", lines)
    if az.head_public_ip and not az.ssh_cidrs and not az.api_cidrs:
        yield _f(Level.WARNING, ("azure", "ssh_cidrs"), "the head has a public IP but no "
                 "address may reach it", "list your network in azure.ssh_cidrs", lines)
    if not t.api.https:
        yield _f(Level.ERROR, ("api", "https"), "an Azure head's API faces a network: it is "
                 "served over HTTPS only", "remove api.https: false", lines)
    if len(az.image.split(":")) != 4:
        yield _f(Level.ERROR, ("azure", "image"), f"image {az.image!r} is not "
                 "PUBLISHER:OFFER:SKU:VERSION", "e.g. Debian:debian-12:12-gen2:latest", lines)
    elif any(ns.rdma for ns in t.compute) and "hpc" not in az.image.split(":")[1].lower():
        yield _f(Level.WARNING, ("azure", "image"), f"image {az.image!r} has no InfiniBand "
                 "stack: RDMA node sets would run MPI over TCP (Azure's HPC images have the "
                 "drivers and UCX: https://learn.microsoft.com/azure/virtual-machines/"
                 "configure#vm-images)", f"remove azure.image (default {HPC_IMAGE}) or "
                 "name another HPC image", lines)
    if az.admin_user in RESERVED_ADMINS or not ADMIN_RE.match(az.admin_user):
        yield _f(Level.ERROR, ("azure", "admin_user"), f"{az.admin_user!r} cannot be an "
                 "Azure admin user", "use 1-32 lowercase letters, digits, '-' or '_', not "
                 "a reserved name such as admin or root", lines)


ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def accounting(t: Template, lines: Lines, running: list[tuple[str, str]]) -> Iterator[Finding]:
    """Accounts and their users as Slurm takes them (sacctmgr lowercases account names);
    a user belongs to one account; an external database needs its password file."""
    owner: dict[str, str] = {}
    for account, members in t.accounting.accounts.items():
        loc: Loc = ("accounting", "accounts", account)
        if not ACCOUNT_RE.match(account) or account == "root":
            yield _f(Level.ERROR, loc, f"bad account name {account!r}",
                     "use 1-32 lowercase letters, digits, '-' or '_' ('root' is Slurm's)",
                     lines)
        for user in members:
            if not ADMIN_RE.match(user):
                yield _f(Level.ERROR, loc, f"bad user name {user!r} in account {account!r}",
                         "use a Unix user name: lowercase letters, digits, '-' or '_'", lines)
            elif user in owner:
                yield _f(Level.ERROR, loc, f"user {user!r} is in accounts {owner[user]!r} "
                         f"and {account!r}", "name each user in one account", lines)
            owner.setdefault(user, account)
    db = t.accounting.database
    if db.host is not None and db.password_file is None:
        yield _f(Level.ERROR, ("accounting", "database", "password_file"),
                 "an external database needs password_file",
                 "name a root-only file on the head node holding the password", lines)
    if not t.accounting.enabled and t.accounting.accounts:
        yield _f(Level.WARNING, ("accounting", "accounts"),
                 "accounts are ignored: accounting is disabled",
                 "remove them, or set accounting.enabled: true", lines)


VALIDATORS: dict[str, Validator] = {
    "cluster_name": cluster_name,
    "nodesets": nodesets,
    "vm_sizes": vm_sizes,
    "network": network,
    "routes": routes,
    "azure": azure,
    "accounting": accounting,
}


def validate_template(t: Template, lines: Lines,
                      running: list[tuple[str, str]]) -> list[Finding]:
    findings: list[Finding] = []
    for validator in VALIDATORS.values():
        findings.extend(validator(t, lines, running))
    if t.provider == "azure" and not any(f.level is Level.ERROR for f in findings):
        findings.extend(arm_limits(t, lines))  # render only a template that is otherwise valid
    return findings
