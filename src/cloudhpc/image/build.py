"""cloudhpc's node image, built here from the same recipe (`provision.sh`) that the exported
Packer file runs on Azure: a Debian 12 root file system (mmdebstrap) with every package a node
needs and cloudhpc in /opt/cloudhpc, so that a node installs nothing at boot.

Two layers, each kept in the image cache (`CLOUDHPC_IMAGE_CACHE`, default
/var/cache/cloudhpc/images) under the hash of what made it:

- base-KEY: Debian + packages + cloudhpc's dependencies (minutes; KEY from the recipe and the
  dependency list),
- cloudhpc-SHA: cloudhpc's own wheel installed over the base (seconds; SHA is the wheel's
  sha256, the pin written into the exported recipe).

A VM's root is an overlay of both with a writable layer of its own."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import requires
from pathlib import Path

import cloudhpc
from cloudhpc.errors import CloudHPCError
from cloudhpc.runner import Runner

RECIPE = Path(__file__).with_name("provision.sh")
SUITE = "bookworm"
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def cache_root() -> Path:
    root = Path(os.environ.get("CLOUDHPC_IMAGE_CACHE", "/var/cache/cloudhpc/images"))
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def requirements() -> list[str]:
    """cloudhpc's runtime dependencies (no extras), as pip requirement lines."""
    return sorted(r for r in (requires("cloudhpc") or []) if "extra ==" not in r)


def source_tree() -> Path:
    """The project's source (a wheel is built from it)."""
    root = Path(cloudhpc.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise CloudHPCError("cloudhpc is not installed from its source tree, so no wheel can "
                            "be built for the node image",
                            hint="install with `pip install -e .` from a clone of cloudhpc")
    return root


@dataclass(frozen=True)
class Image:
    base: Path     # the base layer's root
    layer: Path    # cloudhpc's layer (its upper directory)
    wheel: Path
    sha256: str

    @property
    def lowerdirs(self) -> str:
        """overlayfs lowerdir= value: cloudhpc's layer over the base."""
        return f"{self.layer}:{self.base}"


def _run(argv: list[str], what: str, log: Path) -> None:
    # this machine's environment: pip's and apt's configuration (index, certificates)
    done = Runner().run(argv, check=False, env=dict(os.environ), timeout=3600)
    with log.open("a") as out:
        out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise CloudHPCError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}",
                            hint=f"the whole log is {log}")


def _wheelhouse(dest: Path, log: Path, with_project: bool) -> None:
    """Wheels of cloudhpc's dependencies (and of cloudhpc itself) from this machine's pip
    configuration (the image has no route to PyPI)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text("\n".join(requirements()) + "\n")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(dest)]
    if with_project:
        _run([*pip, "--no-deps", str(source_tree())], "building cloudhpc's wheel", log)
    else:
        _run([*pip, "-r", str(dest / "requirements.txt")], "fetching the dependencies", log)


def base_key() -> str:
    h = hashlib.sha256(RECIPE.read_bytes())
    h.update(("\n".join(requirements()) + SUITE).encode())
    return h.hexdigest()[:16]


def build_base(say: Say = _quiet) -> Path:
    """The base layer's root, built once per recipe and dependency list."""
    root = cache_root() / f"base-{base_key()}"
    if (root / ".complete").exists():
        return root / "rootfs"
    if shutil.which("mmdebstrap") is None:
        raise CloudHPCError("mmdebstrap is not installed", hint="run `make install`")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    log = root / "build.log"
    with tempfile.TemporaryDirectory(prefix="chpc-wheels-") as tmp:
        say("fetching cloudhpc's dependencies as wheels")
        _wheelhouse(Path(tmp), log, with_project=False)
        say("building the node image's base (Debian 12 with Slurm, MPI, cloud-init; "
            "a few minutes, once)")
        _run(["mmdebstrap", "--variant=minbase", "--mode=root",
              f"--customize-hook=copy-in {RECIPE} /tmp",
              "--customize-hook=mkdir -p \"$1/tmp/wheelhouse\"",
              f"--customize-hook=sync-in {tmp} /tmp/wheelhouse",
              "--customize-hook=chroot \"$1\" sh /tmp/provision.sh /tmp/wheelhouse "
              "-r /tmp/wheelhouse/requirements.txt",
              "--customize-hook=rm -rf \"$1/tmp/wheelhouse\" \"$1/tmp/provision.sh\"",
              SUITE, str(root / "rootfs")], "mmdebstrap", log)
    (root / ".complete").touch()
    return root / "rootfs"


def _wheel(log: Path) -> tuple[Path, str]:
    out = cache_root() / "wheels"
    with tempfile.TemporaryDirectory(prefix="chpc-wheel-") as tmp:
        _wheelhouse(Path(tmp), log, with_project=True)
        built = next(Path(tmp).glob("cloudhpc-*.whl"))
        sha = hashlib.sha256(built.read_bytes()).hexdigest()
        out.mkdir(exist_ok=True)
        dest = out / f"{sha[:16]}-{built.name}"
        shutil.copy2(built, dest)
    return dest, sha


def build(say: Say = _quiet) -> Image:
    """The node image for this cloudhpc: the base, and cloudhpc's wheel installed over it."""
    base = build_base(say)
    log = cache_root() / "layers.log"
    wheel, sha = _wheel(log)
    layer = cache_root() / f"cloudhpc-{sha[:16]}"
    if not (layer / ".complete").exists() or not (layer / "base").exists():
        say("installing cloudhpc into the node image")
        shutil.rmtree(layer, ignore_errors=True)
        (layer / "upper" / "tmp").mkdir(parents=True)
        shutil.copy2(wheel, layer / "upper" / "tmp" / wheel.name.split("-", 1)[1])
        name = wheel.name.split("-", 1)[1]
        script = (f"mount -t overlay overlay -o lowerdir={base},upperdir={layer}/upper,"
                  f"workdir={layer}/work {layer}/root && "
                  f"chroot {layer}/root /opt/cloudhpc/bin/pip install -q --no-index --no-deps "
                  f"--force-reinstall /tmp/{name} && rm -f {layer}/root/tmp/{name}")
        for d in ("work", "root"):
            (layer / d).mkdir()
        _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
             "installing cloudhpc's wheel into the image", log)
        shutil.rmtree(layer / "work", ignore_errors=True)
        (layer / "sha256").write_text(sha + "\n")
        (layer / "base").write_text(f"{base}\n")
        (layer / ".complete").touch()
    return Image(base, layer / "upper", wheel, sha)
