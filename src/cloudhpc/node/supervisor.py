"""Per-node supervisor: runs inside the node's namespaces and keeps its daemons alive.

Started by a provider as `nsenter --net=... unshare --mount --uts -- python -m
cloudhpc.node.supervisor SPEC`. It names the host, bind-mounts the node's own files over the
standard paths (so every node sees /etc/hosts, /shared, /scratch as in the cloud), then starts
each daemon and restarts it when it exits. Deliberately imports only the standard library:
it starts once per node and must start fast.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cloudhpc.node import priority
from cloudhpc.node.spec import LISTEN_FD_ENV, DaemonSpec, SupervisorSpec

MS_BIND = 4096
MS_REC = 16384
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
# a daemon that ran this long before it exited is restarted after the shortest pause again
STABLE = 10.0
# beyond its pause, how long a restarting daemon's node is not counted as down (its
# RESTARTING_SUFFIX file holds until when: a provider replaces a node whose daemon stays down)
RESTART_GRACE = 5.0
RESTARTING_SUFFIX = ".restarting"


def bind(src: str, dst: str) -> None:
    if _libc.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind mount {src} -> {dst}: {os.strerror(err)}")


def tmpfs(dst: str) -> None:
    if _libc.mount(b"tmpfs", dst.encode(), b"tmpfs", 0, b"mode=0755") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs at {dst}: {os.strerror(err)}")


def private_tmp(tmp: str, keep: list[str]) -> None:
    """The node's own /tmp (a node is a machine: PMIx, MPI and users' files must not meet
    other nodes'), with KEEP (entries of the machine's /tmp that cloudhpc itself lives in)
    bound back at their places; they are root's and closed to users."""
    held = {name: os.open(f"/tmp/{name}", os.O_PATH) for name in keep
            if os.path.isdir(f"/tmp/{name}")}
    bind(tmp, "/tmp")
    for name, fd in held.items():
        os.makedirs(f"/tmp/{name}", mode=0o700, exist_ok=True)
        bind(f"/proc/self/fd/{fd}", f"/tmp/{name}")
        os.close(fd)


def _child_setup(low: bool = False) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setsid()  # a session, and so a CPU share (autogroup), of its own
    if low:
        priority.set_session_nice(priority.LOW)


class HostPids:
    """Pids as this machine sees them, for the pid files the host and the head read. In a
    PID namespace of its own the supervisor is pid 1 and its children have small pids; it
    keeps a handle on the machine's /proc from before it mounted the node's own."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.ns = os.stat("/proc/self/ns/pid").st_ino if fd is not None else 0

    def me(self) -> int:
        return int(os.readlink("self", dir_fd=self.fd)) if self.fd is not None else os.getpid()

    def of(self, pid: int) -> int:
        if self.fd is None:
            return pid
        for entry in os.listdir(self.fd):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"{entry}/ns/pid", dir_fd=self.fd).st_ino != self.ns:
                    continue
                fd = os.open(f"{entry}/status", os.O_RDONLY, dir_fd=self.fd)
                with os.fdopen(fd) as fh:
                    for line in fh:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            if ids and int(ids[-1]) == pid:
                                return int(ids[0])
                            break
            except OSError:
                continue
        return pid


def own_proc() -> HostPids:
    """Mount the node's own /proc (its PID namespace's), keeping the machine's in reach."""
    fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    pids = HostPids(fd)
    flags = 2 | 4 | 8  # MS_NOSUID | MS_NODEV | MS_NOEXEC
    if _libc.mount(b"proc", b"/proc", b"proc", flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount /proc: {os.strerror(err)}")
    return pids


def listening(address: str, port: int) -> socket.socket:
    """A TCP socket listening at ADDRESS:PORT, for a daemon that takes it from its
    supervisor (as from systemd's socket activation)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(1024)
    return sock


class Daemon:
    pids = HostPids(None)

    def __init__(self, spec: DaemonSpec, run_dir: Path, log_dir: Path) -> None:
        self.name: str = spec["name"]
        self.argv: list[str] = spec["argv"]
        self.wait_for: str | None = spec.get("wait_for")
        self.env: dict[str, str] = spec.get("env", {})
        self.low_start = bool(spec.get("low_start"))
        # A daemon with a port gets it listening from here: clients connect from the first
        # moment (their requests wait in the backlog while it starts; `up` need not wait for
        # a Python or Node.js start), and while it restarts after a crash nobody is refused.
        listen = spec.get("listen")
        self.sock = listening(str(listen[0]), int(listen[1])) if listen else None
        self.pidfile = run_dir / f"{self.name}.pid"
        self.logfile = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.failures = 0  # exits soon after a start, in a row
        self.started_at = 0.0
        self.pause = 0.0
        self.next_start = 0.0
        self.restarting = run_dir / f"{self.name}{RESTARTING_SUFFIX}"

    def start(self, env: dict[str, str]) -> None:
        if self.wait_for and os.path.exists(self.wait_for):
            os.unlink(self.wait_for)  # stale socket of a killed predecessor
        env = {**env, **self.env}
        fds: tuple[int, ...] = ()
        if self.sock is not None:
            fds = (self.sock.fileno(),)
            env[LISTEN_FD_ENV] = str(fds[0])
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, pass_fds=fds,
                                         preexec_fn=functools.partial(_child_setup, self.low_start))
        self.starts += 1
        self.started_at = time.monotonic()
        self.pidfile.write_text(f"{self.pids.of(self.proc.pid)}\n")
        self.restarting.unlink(missing_ok=True)
        if self.wait_for:
            deadline = time.monotonic() + 5
            while not os.path.exists(self.wait_for) and time.monotonic() < deadline:
                time.sleep(0.005)

    def exiting(self) -> None:
        """Its process has ended and is not yet collected: the pause before the next start
        (doubling from 0.2 s to 5 s while it keeps exiting soon after starting), and the
        note that it is being restarted, written while its pid is still taken."""
        if time.monotonic() - self.started_at >= STABLE:
            self.failures = 0
        self.failures += 1
        self.pause = min(5.0, 0.2 * 2 ** (self.failures - 1))
        self.restarting.write_text(f"{time.time() + self.pause + RESTART_GRACE:.3f}\n")

    def exited(self) -> int | None:
        """Its exit status once reap() collected it (not collected here: see reap)."""
        return None if self.proc is None else self.proc.returncode


_log = logging.getLogger("cloudhpc.supervisor")


def log(msg: str) -> None:
    _log.info(msg)


def main(spec_path: str) -> int:
    spec: SupervisorSpec = json.loads(Path(spec_path).read_text())
    node_dir = Path(spec["dir"])
    run_dir, log_dir = node_dir / "run", node_dir / "logs"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    if spec.get("hostname"):  # absent for host-side services such as the control plane
        socket.sethostname(spec["hostname"])
    for src, dst in spec.get("binds", []):
        bind(src, dst)
    for dst in spec.get("tmpfs", []):
        tmpfs(dst)
    if spec.get("tmp"):
        private_tmp(spec["tmp"], spec.get("keep_in_tmp", []))
    if spec.get("pid_namespace") and os.getpid() == 1:
        Daemon.pids = own_proc()
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    env = dict(spec["env"])
    daemons = [Daemon(d, run_dir, log_dir) for d in spec["daemons"]]
    for d in daemons:
        d.start(env)
    (run_dir / "supervisor.pid").write_text(f"{Daemon.pids.me()}\n")
    (run_dir / "ready").write_text("ok\n")
    log(f"{spec['name']} up with {[d.name for d in daemons]}")
    return loop(daemons, env)


def loop(daemons: list[Daemon], env: dict[str, str]) -> int:
    while True:
        pending = [d.next_start for d in daemons if d.next_start]
        timeout = max(0.05, min(pending) - time.monotonic()) if pending else 30.0
        info = signal.sigtimedwait(WATCHED, timeout)
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
            return stop(daemons)
        reap(daemons)
        now = time.monotonic()
        for d in daemons:
            code = d.exited()
            if code is not None and not d.next_start:
                log(f"{d.name} exited with {code}; restarting in {d.pause:.1f} s")
                d.next_start = now + d.pause
            if d.next_start and now >= d.next_start:
                d.next_start = 0.0
                d.start(env)
                log(f"{d.name} restarted (start #{d.starts}, pid {d.proc.pid if d.proc else 0})")


def reap(daemons: list[Daemon]) -> None:
    """Collect every child that ended: as a PID namespace's init the supervisor also
    inherits the orphans of the node's jobs, which must not stay zombies. A daemon's end is
    noted (Daemon.exiting) before its pid is freed, so that a provider looking at the node
    meanwhile sees either the dead process or the note, never neither."""
    by_pid = {d.proc.pid: d for d in daemons if d.proc is not None}
    while True:
        try:
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if ended is None:
            return
        daemon = by_pid.get(ended.si_pid)
        if daemon is not None:
            daemon.exiting()
        _, status = os.waitpid(ended.si_pid, 0)
        if daemon is not None and daemon.proc is not None:
            daemon.proc.returncode = os.waitstatus_to_exitcode(status)


def stop(daemons: list[Daemon]) -> int:
    for d in reversed(daemons):
        if d.proc and d.proc.poll() is None:
            d.proc.terminate()
    deadline = time.monotonic() + 5
    for d in daemons:
        if d.proc:
            try:
                d.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.proc.kill()
    log("stopped")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s supervisor: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")
    sys.exit(main(sys.argv[1]))
