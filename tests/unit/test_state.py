"""The template has one copy: the cluster's directory. The state store's record points there,
and a store from before keeps its templates (moved to the directories) on first open."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cloudhpc.paths import ClusterDir
from cloudhpc.state import Store


def test_put_cluster_writes_the_one_copy(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.put_cluster("c", "local", "running", {"name": "c", "x": 1}, "10.0.0.0/24")
    cdir = ClusterDir.of("c", tmp_path)
    assert json.loads(cdir.template.read_text()) == {"name": "c", "x": 1}
    assert oct(cdir.root.stat().st_mode & 0o777) == "0o700"
    record = store.cluster("c")
    assert record is not None and record.template == {"name": "c", "x": 1}
    with sqlite3.connect(tmp_path / "state.db") as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(clusters)")}
    assert "template" not in columns
    store.put_cluster("c", "local", "running", {"name": "c", "x": 2}, "10.0.0.0/24")
    assert store.cluster("c").template == {"name": "c", "x": 2}  # type: ignore[union-attr]


def test_an_old_store_moves_its_templates_out(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("CREATE TABLE clusters (name TEXT PRIMARY KEY, provider TEXT NOT NULL, "
                   "status TEXT NOT NULL, template TEXT NOT NULL, cidr TEXT NOT NULL, "
                   "created REAL NOT NULL, updated REAL NOT NULL)")
        db.execute("INSERT INTO clusters VALUES ('old', 'local', 'running', ?, "
                   "'10.1.0.0/24', 1, 1)", (json.dumps({"name": "old"}),))
    store = Store(tmp_path / "state.db")
    record = store.cluster("old")
    assert record is not None and record.template == {"name": "old"}
    assert ClusterDir.of("old", tmp_path).template.exists()
