"""A quiet terminal for `raydiant render`: its plan, progress bar and summary, nothing else.

Ray writes to this process's standard output and error from places Python cannot reach (its
C++ core worker, Ray Data's loggers, progress notices). For the length of a job, file
descriptors 1 and 2 point at a log file, named at the start, and the command writes to the
terminal through a console of its own on a copy of the original descriptor. `--verbose` keeps
everything on the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from rich.console import Console


def job_log_path() -> Path:
    folder = Path(tempfile.gettempdir()) / "raydiant"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"render-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


@contextlib.contextmanager
def others_to(log_path: Path) -> Iterator[Console]:
    """Everything written to fds 1 and 2 goes to `log_path` inside the block; the console yielded
    writes to the terminal (standard error, as it was)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield Console(file=terminal, stderr=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()
