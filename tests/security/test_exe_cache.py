"""Attack 2: a user plants a program in the shared program cache; a later job of another
user (here an admin's) must never run it."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from cloudhpc.storage.urls import parse_blob_url

from .conftest import Sec

GENUINE = "#!/bin/sh\necho GENUINE-PROGRAM\n"


def _upload(sec: Sec, tmp_path: Path, name: str, body: str) -> str:
    src = tmp_path / name
    src.write_text(body)
    sec.cluster.storage.put(src, parse_blob_url(f"blob://tools/{name}"))
    return hashlib.sha256(body.encode()).hexdigest()


def _plant(sec: Sec, keys: list[str], name: str) -> None:
    """The attacker's job: write a program wherever the cache might look."""
    tries = "\n".join(
        f"mkdir -p /shared/.cloudhpc/exe/{k} 2>/dev/null; "
        f"printf '#!/bin/sh\\necho PWNED\\n' > /shared/.cloudhpc/exe/{k}/{name} 2>/dev/null; "
        f"chmod 755 /shared/.cloudhpc/exe/{k}/{name} 2>/dev/null" for k in keys)
    script = f"""#!/bin/bash
{tries}
for f in /shared/.cloudhpc/exe/*/{name} /shared/.cloudhpc/exe/*/*/{name}; do
  printf '#!/bin/sh\\necho PWNED\\n' > $f 2>/dev/null
done
true
"""
    sec.wait("cht-mal", sec.submit("cht-mal", script))


def test_a_planted_program_is_never_run(sec: Sec, tmp_path: Path) -> None:
    sec.cluster.storage.mkdir("tools")
    sec.post("cht-adm", "/api/storage/containers/tools/grants",
             json={"user": "*", "write": False})
    # planted before the program was ever fetched, under every key the cache might use
    sha = _upload(sec, tmp_path, "prog", GENUINE)
    _plant(sec, [sha[:16], sha, f"{sha[:16]}/x"], "prog")
    first = sec.submit("cht-adm", "#!/bin/sh\nprog\n", exe=["blob://tools/prog"])
    assert sec.wait("cht-adm", first)["state"] == "completed"
    out = sec.get("cht-adm", f"/api/jobs/{first}/logs").json()["output"]
    assert "GENUINE-PROGRAM" in out and "PWNED" not in out
    # overwritten after it was cached
    _plant(sec, [sha[:16], sha], "prog")
    second = sec.submit("cht-adm", "#!/bin/sh\nprog\n", exe=["blob://tools/prog"])
    sec.wait("cht-adm", second)
    out = sec.get("cht-adm", f"/api/jobs/{second}/logs").json()["output"]
    assert "GENUINE-PROGRAM" in out and "PWNED" not in out
    cache = sec.cluster.dir.shared / ".cloudhpc" / "exe"
    assert not cache.stat().st_mode & (stat.S_IWOTH | stat.S_IWGRP)
