"""Where things live: the state directory (CLOUDHPC_HOME, default /var/lib/cloudhpc)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_HOME = "/var/lib/cloudhpc"


def home() -> Path:
    root = Path(os.environ.get("CLOUDHPC_HOME", DEFAULT_HOME))
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    return root


@dataclass(frozen=True)
class ClusterDir:
    root: Path

    @classmethod
    def of(cls, name: str, base: Path | None = None) -> ClusterDir:
        return cls((base or home()) / "clusters" / name)

    def node(self, name: str) -> Path:
        return self.root / "nodes" / name

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def homes(self) -> Path:
        """Users' homes: /home inside every node of the cluster."""
        return self.root / "home"

    @property
    def jobs_meta(self) -> Path:
        """cloudhpc's own record of each job (staging request, tokens, program checksums):
        in /shared, so every node sees it, but where no job can write."""
        return self.shared / ".cloudhpc" / "jobs"

    @property
    def exe_cache(self) -> Path:
        return self.shared / ".cloudhpc" / "exe"

    @property
    def api_cert(self) -> Path:
        return self.etc / "api.crt"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def slurm_etc(self) -> Path:
        return self.root / "etc" / "slurm"

    @property
    def slurm_conf(self) -> Path:
        return self.slurm_etc / "slurm.conf"

    @property
    def munge_key(self) -> Path:
        return self.etc / "munge.key"

    @property
    def blob_account(self) -> Path:
        return self.etc / "blob.json"

    @property
    def blob_data(self) -> Path:
        return self.root / "blob"

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def template(self) -> Path:
        """The cluster's template (validated, defaults filled in): the one copy. The state
        store's record points here; every process of the cluster reads it."""
        return self.etc / "template.json"

    def write_template(self, data: dict[str, Any]) -> None:
        """Replace the template whole (readers never see half of it)."""
        if not self.root.exists():
            self.root.mkdir(mode=0o700, parents=True)
        self.etc.mkdir(exist_ok=True)
        tmp = self.etc / f".template.json.{os.getpid()}"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.template)

    def read_template(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.template.read_text())
        return data

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def host_path(self, node_path: str) -> Path | None:
        """Map a cluster-wide path as a node sees it (/shared/...) to this machine's path."""
        if node_path == "/shared" or node_path.startswith("/shared/"):
            return self.shared / node_path[len("/shared/"):]
        if node_path == "/home" or node_path.startswith("/home/"):
            return self.homes / node_path[len("/home/"):]
        return None
