"""Attack 5: tokens that outlive their cluster, and tokens that run jobs as root or as a
system account."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cloudhpc.api.tokens import TokenStore
from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError
from cloudhpc.state import Store
from tests.conftest import template

from .conftest import Sec


def test_a_token_dies_with_its_cluster(home: object) -> None:
    tpl = template("t-tok", "198.19.18.0/24", count=1)
    tpl["storage"] = {"blob": {"enabled": False}}
    first = Cluster.up(tpl)
    try:
        store = TokenStore(first.store.path)
        _, token = store.create(first.name, "cht-tok")
        assert store.verify(first.name, token) is not None
    finally:
        first.down()
    second = Cluster.up(tpl)
    try:
        assert TokenStore(second.store.path).verify(second.name, token) is None
    finally:
        second.down()


@pytest.mark.parametrize("user", ["root", "daemon", "nobody", "bin", "cht-ok\n",
                                  "cht-ok\nroot", "Root", "-x"])
@pytest.mark.parametrize("admin", [False, True])
def test_no_token_for_root_system_accounts_or_bad_names(home: object, user: str,
                                                       admin: bool) -> None:
    store = TokenStore(Store().path)
    with pytest.raises(CloudHPCError):
        store.create("t-any", user, admin=admin)


def test_token_create_refuses_root_in_one_line(sec: Sec) -> None:
    for user in ("root", "daemon"):
        res = subprocess.run([sys.executable, "-m", "cloudhpc.cli", "token", "create", "-c",
                              sec.cluster.name, "--user", user, "--admin"],
                             capture_output=True, text=True)
        assert res.returncode != 0 and "chpc_" not in res.stdout, res.stdout
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2
