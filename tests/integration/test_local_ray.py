"""Private Ray heads (cluster/runtime/local_ray.py): a head dies with the process that started it, even
when that process is SIGKILLed and runs none of its clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster.runtime.processes import descendants

REPO = Path(__file__).resolve().parents[2]
OWNER = """
import time
from cluster.runtime.local_ray import private_head
with private_head(num_cpus=1):
    print("ready", flush=True)
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def test_a_private_head_dies_with_its_owner_even_by_sigkill():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        assert owner.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while not any("/raylet " in command_of(pid) for pid in descendants(owner.pid)):
            assert time.monotonic() < deadline, "the head's raylet never started"
            time.sleep(0.1)
        tree = descendants(owner.pid)
        assert any("gcs_server" in command_of(pid) for pid in tree), [command_of(p) for p in tree]
        os.kill(owner.pid, signal.SIGKILL)  # no finally, no atexit: only the watchdog can act
        owner.wait()
        deadline = time.monotonic() + 60
        while (left := [pid for pid in tree if alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"left running after the owner died: {[command_of(p) for p in left]}"
    finally:
        for pid in descendants(owner.pid):  # only if the test failed: leave nothing behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
