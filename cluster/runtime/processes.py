"""Processes and ports on this machine: free loopback ports, waiting for a server to listen,
stopping a process with everything it started (by process id, never by name), and a watchdog
that does so when the process that started it dies, however it died.

Used by the private Ray heads (`cluster/runtime/local_ray.py`), the local service harness and the
tests' servers. Only the standard library: the watchdog starts in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time

WATCH_INTERVAL_S = 0.5


def free_port() -> int:
    return free_ports(1)[0]


# Ports this module hands out come from here: below Linux's ephemeral range (32768-60999), where
# the kernel puts every bind to port 0 (Ray's worker and gRPC servers, outgoing connections), and
# above Ray's default worker ports (10002-19999). A port picked from the ephemeral range could be
# taken by another process's port-0 bind between our pick and our server's bind.
CHOSEN_PORTS = range(20000, 32768)


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports from CHOSEN_PORTS (all held open while they are chosen)."""
    pick = random.SystemRandom()
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", pick.choice(CHOSEN_PORTS)))
            except OSError:  # in use (or just held by us): another pick
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float, what: str = "server") -> None:
    """Until something listens on 127.0.0.1:`port`; fails at once if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"the {what} did not listen on 127.0.0.1:{port} within {timeout_s:g}s")


def stop_session(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM `process` (the leader of its own session), then SIGKILL whatever of its session
    is left: Ray workers live in process groups of their own, but not in sessions of their own."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    kill_session(process.pid)
    process.wait()


def stop_tree(process: subprocess.Popen, grace_s: float = 2) -> None:
    """SIGTERM `process`, then SIGKILL whatever of its process tree is left. A private head keeps
    nothing worth a graceful stop, and `ray start --block` takes 30 s or more to stop by itself
    once Ray Data has run on it."""
    tree = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for child, parent in (map(int, line.split()) for line in out.splitlines()):
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(pid) for pid, s in (line.split() for line in out.splitlines()) if int(s) == sid]


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid`."""
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def watch_owner(target_pid: int) -> subprocess.Popen:
    """Start a watchdog that SIGKILLs `target_pid` and its process tree as soon as this process
    dies, even by SIGKILL (which runs no clean-up of ours). The caller ends the watchdog when it
    stops the target itself."""
    return subprocess.Popen([sys.executable, "-m", "cluster.runtime.processes", str(os.getpid()), str(target_pid)],
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _watch(owner_pid: int, target_pid: int) -> None:
    # The watchdog's parent is the owner; when the owner dies the watchdog is re-parented (to
    # init or a subreaper), so a changed parent id means the owner is gone.
    while os.getppid() == owner_pid:
        time.sleep(WATCH_INTERVAL_S)
    # Freeze the tree first, so nothing in it starts another process while it is killed.
    tree: set[int] = set()
    for _ in range(3):
        found = {target_pid, *descendants(target_pid)} - tree
        if not found:
            break
        _signal(found, signal.SIGSTOP)
        tree |= found
    _signal(tree, signal.SIGKILL)


def _signal(pids, signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


if __name__ == "__main__":
    _watch(int(sys.argv[1]), int(sys.argv[2]))
