"""The processes Ciro starts and stops: the local Ray head, the gateway, the devnet, a provider's node.

One way for each step, whoever the caller: :func:`spawn` starts a command detached from the terminal with its
output appended to a log file; :func:`wait_ready` polls a readiness check until it passes, and raises with the log's
last lines as soon as the process dies instead; :func:`stop` (a child) and :func:`terminate` (a recorded pid) end a
process with SIGTERM, then SIGKILL after a grace period. Run-state records (``$CIRO_HOME/run/*.json``) name a process
by pid and by the command line it was started with; :func:`owned` checks both before anything signals it, so a pid
the system has since given to another program is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import CiroError
from .home import HomePaths

__all__ = ["cmdline", "devnet_record", "free_port", "log_tail", "owned", "process_alive", "read_json", "spawn",
           "stop", "terminate", "wait_ready", "write_json"]

#: How much of a log an error about a process that died while starting quotes.
TAIL_CHARS = 2000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the system picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- run-state records ---------------------------------------------------------------------------------------------


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


def devnet_record(home: Path) -> Path:
    """Where ``ciro devnet`` records itself (pid, command line, port, URL, state folder) while it runs."""
    return HomePaths(home).run_file("devnet")


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


# -- start, readiness, stop ----------------------------------------------------------------------------------------


def spawn(cmd: list[str], *, log: Path, env: Mapping[str, str] | None = None,
          detach: bool = True) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdin closed and stdout and stderr appended to ``log``. Detached (the default), it runs in
    a session of its own: it outlives this process and a Ctrl-C here does not reach it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, start_new_session=detach)


def log_tail(log: Path, chars: int = TAIL_CHARS) -> str:
    """The last ``chars`` characters of a log file ('' when there is none)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - chars))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def wait_ready(proc: subprocess.Popen[bytes] | int, ready: Callable[[], bool], *, what: str, log: Path,
               timeout_s: float, retry: str, late: str | None = None, error: type[CiroError] = CiroError,
               poll_s: float = 0.2) -> None:
    """Poll ``ready()`` until it is true. ``proc`` is the child (or the pid of a process this one did not start)
    that must stay alive meanwhile: once it has exited this raises ``error`` quoting the last lines of ``log``.
    Past ``timeout_s`` it raises ``error`` with ``late`` (default: ``what`` did not come up in time). ``what``
    starts the messages ("The gateway"); ``retry`` says what to run again ("run `ciro up` again")."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if isinstance(proc, int):
            ended, status = not process_alive(proc), ""
        else:
            code = proc.poll()
            ended, status = code is not None, f" (exit code {code})"
        if ended:
            raise error(f"{what} exited while starting{status}: fix what its log says, then {retry}. "
                        f"Last lines of {log}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise error(late or f"{what} did not come up in {timeout_s:g}s. See {log}; {retry} once the machine "
                        "is less busy.")
        time.sleep(poll_s)


def stop(proc: subprocess.Popen[Any], grace_s: float) -> int:
    """End a child: SIGTERM, then SIGKILL if it still runs after ``grace_s``; returns its exit code (reaped)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def terminate(pid: int | None, grace_s: float) -> bool:
    """End a process by pid (one this process may not have started: it cannot be reaped here): SIGTERM, then
    SIGKILL if it still runs after ``grace_s``. False when it was not running."""
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
