"""The quiet terminal of `raydiant render` (jobs/driver/terminal.py): inside the block, what
anything writes to file descriptors 1 and 2 (a C++ core worker included) lands in the log; the
console still reaches the terminal; afterwards, both descriptors are as they were."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from jobs.driver.terminal import job_log_path


def test_others_go_to_the_log_and_the_console_to_the_terminal(tmp_path):
    log = tmp_path / "job.log"
    script = textwrap.dedent(f"""
        import os, sys
        from jobs.driver.terminal import others_to
        with others_to({str(log)!r}) as console:
            os.write(1, b"from fd 1\\n")
            os.write(2, b"from fd 2\\n")
            print("from print")
            console.print("the progress bar")
        print("after the block")
    """)
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=os.getcwd())
    assert ran.returncode == 0, ran.stderr
    assert log.read_text().splitlines() == ["from fd 1", "from fd 2", "from print"]
    assert "the progress bar" in ran.stderr and "from fd" not in ran.stderr
    assert ran.stdout == "after the block\n"


def test_each_job_gets_its_own_log_name():
    path = job_log_path()
    assert path.parent.is_dir() and path.name.startswith("render-") and str(os.getpid()) in path.name
