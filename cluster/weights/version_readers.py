"""Who may still be reading a cached weights version, across the nodes that share the cache.

A process that takes a version holds a reader lease on it for the rest of its life: a small
file, `<readers folder>/<owner>`, holding an expiry that one daemon thread of the process pushes
forward every `LEASE_S / 3`. A process that dies stops renewing, and its lease lapses after
`LEASE_S`. A version whose leases have all lapsed has no reader left anywhere (a pipeline loaded
from it lives only as long as its process), so it may be collected.

Never released early: a loaded pipeline may keep memory-mapping the version's files (CPU
offload, a CPU pipeline), and its process is the only one that knows when it stops.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

# How long a lease lives without renewal: a reader's here, a downloader's in shared_cache.py.
LEASE_S = float(os.environ.get("RAYDIANT_CACHE_LEASE_S", "60"))
_OWNER = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
_held: set[Path] = set()
_lock = threading.Lock()
_renewer: threading.Thread | None = None


def hold(folder: Path) -> None:
    """Hold a reader lease on the version whose readers gather in `folder`, from now on. A cache
    this process cannot write (a read-only, pre-seeded volume) takes none: nothing collects there."""
    global _renewer
    with _lock:
        try:
            _write(folder)
        except OSError:
            return
        _held.add(folder)
        if _renewer is None or not _renewer.is_alive():
            _renewer = threading.Thread(target=_renew, name="version-readers", daemon=True)
            _renewer.start()


def has_live_reader(folder: Path) -> bool:
    """Whether any process's lease in `folder` has not lapsed."""
    now = time.time()
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return False
    for entry in entries:
        try:
            if json.loads(entry.read_text())["expires"] >= now:
                return True
        except (FileNotFoundError, ValueError, KeyError):
            continue  # gone, or caught mid-write (its writer renames whole files: not ours)
    return False


def _write(folder: Path, create: bool = True) -> None:
    """Write this process's lease; a renewal never recreates a folder someone removed."""
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    fresh = folder / f".{_OWNER}.tmp"
    fresh.write_text(json.dumps({"expires": time.time() + LEASE_S}))
    os.replace(fresh, folder / _OWNER)


def _renew() -> None:
    while True:
        time.sleep(LEASE_S / 3)
        with _lock:
            for folder in list(_held):
                try:
                    _write(folder, create=False)
                except OSError:
                    _held.discard(folder)  # its version was collected, or the volume is gone
