"""The API daemon on the head node: `python -m cloudhpc.api.server CLUSTER_DIR`, supervised
like the Slurm daemons. Listens on the head's cluster address, port 8443."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from cloudhpc.api.app import create_app
from cloudhpc.api.tokens import TokenStore
from cloudhpc.cluster import Cluster
from cloudhpc.state import Store

PORT = 8443


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    home = root.parent.parent  # CLOUDHPC_HOME/clusters/NAME
    store = Store(home / "state.db")
    record = store.cluster(root.name)
    if record is None:
        print(f"cloudhpc api: no cluster {root.name} in {home}", file=sys.stderr)
        return 1
    cluster = Cluster(record, store)
    app = create_app(cluster, TokenStore(home / "state.db"))
    uvicorn.run(app, host=cluster.plan.head.address, port=PORT, log_level="warning",
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
