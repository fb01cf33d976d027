"""The API daemon on the head node: `python -m cloudhpc.api.server CLUSTER_DIR`, supervised
like the Slurm daemons. Listens on the head's cluster address, port 8443."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn

from cloudhpc.api.app import create_app
from cloudhpc.api.tokens import TokenStore
from cloudhpc.cluster import Cluster
from cloudhpc.node import priority
from cloudhpc.node.spec import LISTEN_FD_ENV
from cloudhpc.plan import API_PORT
from cloudhpc.state import Store

log = logging.getLogger("cloudhpc.api")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    root = Path(argv[0])
    home = root.parent.parent  # CLOUDHPC_HOME/clusters/NAME
    store = Store(home / "state.db")
    record = store.cluster(root.name)
    if record is None:
        log.error("no cluster %s in %s", root.name, home)
        return 1
    cluster = Cluster(record, store, on_head=True)
    app = create_app(cluster, TokenStore(home / "state.db"))
    # readers first: the API answers from memory in well under a millisecond, while the
    # Slurm daemons, its own workers (nice 5) and the jobs' processes share the same cores
    os.nice(-5)
    # big, long-lived snapshots: collect young objects less often and never scan what was
    # loaded at start-up again (full collections over a 10,000-job view cost tens of ms)
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    https = cluster.plan.api_https  # the certificate made at `up` (cloudhpc.api.tls)
    config = uvicorn.Config(app, host=cluster.plan.head.address, port=API_PORT,
                            log_level="warning", access_log=False,
                            ssl_certfile=str(root / "etc" / "api.crt") if https else None,
                            ssl_keyfile=str(root / "etc" / "api.key") if https else None)
    # the port, listening since the supervisor started (cloudhpc.node.supervisor.Daemon)
    fd = os.environ.pop(LISTEN_FD_ENV, None)
    priority.serving()  # started with the least CPU share (cloudhpc.node.priority)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=int(fd))] if fd else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
