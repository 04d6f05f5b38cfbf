"""Run-state files under ``$CIRO_HOME/run`` and the processes they name.

A record names a process by pid and by the command line it was started with; :func:`owned` checks both before
anything signals it, so a pid the system has since given to another program is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .errors import CiroError

__all__ = ["cmdline", "devnet_record", "owned", "process_alive", "read_json", "terminate", "write_json"]


def read_json(path: Path) -> dict[str, Any]:
    """A run-state file (``$CIRO_HOME/run/*.json``); {} when it is missing or unreadable."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def write_json(path: Path, state: dict[str, Any]) -> None:
    """Replace a run-state file atomically (a reader sees the old state or the new one, never half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def cmdline(pid: int) -> str | None:
    """The command line ``pid`` runs, its arguments joined by spaces; None when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None  # the process is gone
    except OSError:
        return None
    try:  # no /proc (macOS)
        out = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def owned(pid: int | None, cmd: list[str] | None) -> bool:
    """Whether ``pid`` is alive and still runs ``cmd``, the command line recorded when it was started (the same
    arguments after the program's name): a pid the system has given to another program is never signalled."""
    if not pid or not cmd or not process_alive(pid):
        return False
    line = cmdline(pid)
    return line is not None and line.endswith(" " + " ".join(cmd[1:])) and Path(cmd[0]).name in line


def devnet_record(home: Path) -> Path:
    """Where ``ciro devnet`` records itself (pid, command line, port, URL, state folder) while it runs."""
    return home / "run" / "devnet.json"


def terminate(pid: int | None, grace_s: float) -> bool:
    if not process_alive(pid):
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_alive(pid):
            raise CiroError(f"Process {pid} survived SIGKILL. Check it with `ps -p {pid}`.")
    return True
