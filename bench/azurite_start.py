"""CPU seconds Azurite's blob service takes to start (from its launch until it listens), as
Azurite's own command starts it and as cloudhpc's storage node does: the bundle `make
install` makes, with V8's code cache (src/cloudhpc/storage/azurite_start.js). Every `up`
and every restart of a killed storage node pays it. Prints JSON.

    python bench/azurite_start.py [RUNS]
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from cloudhpc.storage.azurite import BUNDLE, START, azurite_bin

PORT = 10997
FLAGS = ["--blobHost", "127.0.0.1", "--blobPort", str(PORT), "--disableTelemetry",
         "--skipApiVersionCheck", "--loose", "--silent"]


def cpu_to_listen(argv: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="cloudhpc-bench-az-") as data:
        proc = subprocess.Popen([*argv, *FLAGS, "--location", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.01)
            else:
                raise SystemExit(f"Azurite never listened: {argv}")
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    variants = {"azurite_own_command": [azurite_bin()]}
    if BUNDLE.is_file():
        variants["bundle_with_code_cache"] = ["node", str(START), str(BUNDLE)]
        cpu_to_listen(variants["bundle_with_code_cache"])  # the cache exists from here on
    out: dict[str, object] = {"benchmark": "azurite_start", "runs": runs}
    for name, argv in variants.items():
        samples = [round(cpu_to_listen(argv), 2) for _ in range(runs)]
        out[name] = {"cpu_s_median": statistics.median(samples), "samples": samples}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
