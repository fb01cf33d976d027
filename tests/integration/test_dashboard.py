"""The dashboard in a real browser (Playwright driving Debian's Chromium) against a real
autoscaling cluster: log in, see the nodes, submit a job from the page, watch it run on nodes
that appear for it and go away after. Screenshots go to artifacts/dashboard/."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect, sync_playwright

from cloudhpc.api.tokens import TokenStore
from cloudhpc.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "dashboard"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WEB = {"version": 1, "name": "t-web", "network": {"cidr": "198.19.17.0/24"},
       "compute": [{"name": "hpc", "size": "Standard_D4s_v5", "min": 1, "max": 1},
                   {"name": "dyn", "size": "Standard_D2s_v5", "min": 0, "max": 2,
                    "idle_timeout": 5}]}


@pytest.fixture(scope="module")
def web_cluster(home: Path) -> Iterator[Cluster]:
    c = Cluster.up(WEB)
    try:
        yield c
    finally:
        c.down()
        subprocess.run(["userdel", "cht-webadm"], capture_output=True)  # its token's user


@pytest.fixture()
def page() -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: run `make install` (it installs Debian's chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # the API's certificate is the cluster's own (no CA the browser knows)
            yield browser.new_page(viewport={"width": 1280, "height": 900},
                                   ignore_https_errors=True)
        finally:
            browser.close()


def goto(page: Page, url: str) -> None:
    """Chromium aborts a navigation with ERR_NETWORK_CHANGED when the machine's interfaces
    change (a cluster's bridge and veths, made just before): that load is tried again."""
    for _ in range(3):
        try:
            page.goto(url)
            return
        except PlaywrightError as exc:
            if "ERR_NETWORK_CHANGED" not in str(exc):
                raise
    page.goto(url)


def test_dashboard_shows_a_cluster_scaling_up_and_down(web_cluster: Cluster,
                                                       page: Page) -> None:
    url = web_cluster.api_url
    cert = str(web_cluster.dir.api_cert)
    _, token = TokenStore(web_cluster.store.path).create(web_cluster.name, "cht-webadm",
                                                         admin=True)
    goto(page, url + "/")
    page.fill("#token", "chpc_00000000_wrong-token-wrong-token")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_contain_text("log in failed")
    page.screenshot(path=str(SHOTS / "01-login-refused.png"))

    page.fill("#token", token)
    page.click("#login-form button")
    expect(page.locator("[data-node=hpc-1]")).to_contain_text("idle")
    expect(page.locator("[data-node=dyn-1]")).to_contain_text("powered_down")
    expect(page.locator("#cluster-name")).to_have_text("t-web")
    page.screenshot(path=str(SHOTS / "02-logged-in.png"), full_page=True)

    page.fill("#script", "#!/bin/bash\nhostname; sleep 4; echo from-the-browser\n")
    page.fill("#nodes", "2")
    page.fill("#partition", "dyn")
    page.click("#submit-form button")
    expect(page.locator("#submit-result")).to_contain_text("submitted job")
    job = page.locator("#submit-result").get_attribute("data-job")
    assert job
    expect(page.locator("[data-nodes-up=dyn]")).to_contain_text("dyn: 2 nodes up",
                                                                 timeout=60_000)
    page.screenshot(path=str(SHOTS / "03-scaled-up.png"), full_page=True)
    try:
        expect(page.locator(f"[data-job='{job}'] td.state-completed")).to_have_count(
            1, timeout=90_000)
    except AssertionError:  # what Slurm and the nodes said, for the report
        page.screenshot(path=str(SHOTS / "03-not-completed.png"), full_page=True)
        for log in sorted(web_cluster.dir.logs.glob("slurm*.log")) + sorted(
                web_cluster.dir.root.glob("nodes/dyn-*/logs/*.log")):
            print(f"== {log}\n" + "".join(log.read_text(errors="replace").splitlines(True)[-40:]))
        raise
    expect(page.locator("[data-nodes-up=dyn]")).to_contain_text("dyn: 0 nodes up",
                                                                 timeout=90_000)
    expect(page.locator("#events")).to_contain_text("node_terminated")
    page.screenshot(path=str(SHOTS / "04-scaled-down.png"), full_page=True)
    # usage from Slurm accounting: the job's node-hours plotted per day, and its user's row
    page.reload()
    expect(page.locator("#usage tbody")).to_contain_text("cht-webadm", timeout=30_000)
    expect(page.locator("#plot-usage rect")).to_have_count(1)
    assert int(page.locator("#plot-usage").get_attribute("data-node-seconds") or 0) >= 2 * 4
    page.screenshot(path=str(SHOTS / "05-usage.png"), full_page=True)

    samples: list[dict[str, Any]] = httpx.get(
        url + "/api/metrics", headers={"Authorization": f"Bearer {token}"}, verify=cert).json()
    dyn = [s["nodes_up"].get("dyn", 0) for s in samples]
    assert 2 in dyn and dyn[-1] == 0 and dyn.index(2) < len(dyn) - 1
    logs = httpx.get(f"{url}/api/jobs/{job}/logs",
                     headers={"Authorization": f"Bearer {token}"}, verify=cert).json()["output"]
    assert "from-the-browser" in logs
