"""`ciro devnet`, `ciro up` and `ciro down` on one CIRO_HOME, with real processes.

`ciro up` uses a running `ciro devnet` of its home and `ciro down` leaves that devnet running; a devnet port held by
anything else is refused before anything starts; a start that fails stops what it had started; `ciro down` stops
what a killed `ciro up` left behind, and never a recorded pid that now runs something else. The long test costs
one devnet and two Ray heads (one per `ciro up` that gets as far as starting one).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CIRO, free_port

from ciro.local import process_alive, read_json, write_json
from ciro_devnet.launch import devnet_config

pytestmark = pytest.mark.timeout(900)


def _env(home: Path, port: int, devnet_port: int) -> dict[str, str]:
    env = {**os.environ, "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_DEVNET_PORT": str(devnet_port)}
    for name in ("CIRO_GATEWAY_URL", "CIRO_SETTLEMENT", "CIRO_RAY_ADDRESS", "CIRO_NUM_WORKERS"):
        env.pop(name, None)
    return env


def _ciro(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CIRO, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _commands_naming(text: str) -> list[str]:
    """Command lines of this machine's processes that contain `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and text in line:
            found.append(line)
    return found


def _ray_gone(ray_port: int) -> bool:
    """No Ray head of that port left: its GCS port closed, no process started for it (polled: the head's processes
    take a moment to wind down after `ray start` exits)."""
    names = (f"--port={ray_port} ", f"gcs_server_port={ray_port}", f"127.0.0.1:{ray_port}")
    return _until(lambda: not _listening(ray_port) and not any(_commands_naming(n) for n in names), 60)


def test_down_never_signals_a_recorded_pid_that_runs_something_else(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home, free_port(), free_port())
    state = home / "run" / "local.json"
    sleeper_cmd = [sys.executable, "-c", "import time; time.sleep(300)"]
    sleeper = subprocess.Popen(sleeper_cmd)
    try:
        # the pid was recorded for a gateway, a Ray head (a record from before command lines were kept) and a devnet
        write_json(state, {
            "gateway_pid": sleeper.pid, "gateway_url": "http://127.0.0.1:1",
            "gateway_cmd": [sys.executable, "-m", "ciro_ray", "serve", "--host", "127.0.0.1", "--port", "1"],
            "ray_pid": sleeper.pid, "ray_started": True, "ray_address": "127.0.0.1:1",
            "devnet_pid": sleeper.pid, "devnet_cmd": [sys.executable, "-m", "ciro_devnet", "--port", "1"]})
        down = _ciro(env, "down", timeout=60)
        assert down.returncode == 0 and down.stdout.strip() == "stopped: nothing was running", down.stderr
        assert sleeper.poll() is None and not state.exists()
        # a record whose command line the process still runs is acted on
        write_json(state, {"gateway_pid": sleeper.pid, "gateway_cmd": sleeper_cmd})
        down = _ciro(env, "down", timeout=60)
        assert down.stdout.strip() == "stopped: gateway", down.stdout + down.stderr
        assert sleeper.wait(timeout=30) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_devnet_port_held_by_something_else_is_refused_before_anything_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = _env(home, free_port(), port)
        devnet = _ciro(env, "devnet", timeout=120)
        assert devnet.returncode == 1, devnet.stdout + devnet.stderr
        assert f"Port {port} is taken by something that is not a Ciro devnet" in devnet.stderr
        assert "ciro devnet --port P" in devnet.stderr
        up = _ciro(env, "up", "--workers", "1", timeout=120)
        assert up.returncode == 1, up.stdout + up.stderr
        assert f"Port {port} is taken by something that is not a Ciro devnet" in up.stderr
        assert "--devnet-port" in up.stderr and "CIRO_DEVNET_PORT" in up.stderr
        assert "starting" not in up.stderr  # nothing was started
    assert not (home / "run" / "local.json").exists()
    assert _ciro(env, "down", timeout=60).stdout.strip() == "stopped: nothing was running"


def test_up_uses_a_running_ciro_devnet_and_leaves_nothing_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port, devnet_port = free_port(), free_port()
    env = _env(home, port, devnet_port)
    state = home / "run" / "local.json"
    url = f"http://127.0.0.1:{devnet_port}/rpc"
    log = tmp_path / "devnet.log"
    with open(log, "wb") as out:
        devnet = subprocess.Popen([CIRO, "devnet"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        assert _until(lambda: b"Ready in" in log.read_bytes() or devnet.poll() is not None, 300), log.read_text()
        assert devnet.poll() is None, log.read_text()
        again = _ciro(env, "devnet", timeout=60)
        assert again.returncode == 1 and f"A Ciro devnet already answers on {url}" in again.stderr, again.stderr
        assert "this home's" in again.stderr

        # 1. the gateway cannot bind its port (bound here, not listening, so `ciro up`'s check passes): the start
        # fails after the Ray head and the gateway started, and stops the Ray head; the devnet is not its to stop
        with socket.socket() as held:
            held.bind(("127.0.0.1", port))
            failed = _ciro(env, "up", "--workers", "1")
        assert failed.returncode == 3, failed.stdout + failed.stderr
        assert f"using this home's devnet already running on {url} (`ciro devnet`, pid {devnet.pid})" in failed.stderr
        assert "The gateway exited while starting" in failed.stderr
        assert "stopped what this start had begun: ray head" in failed.stderr, failed.stderr
        match = re.search(r"Ray head on 127\.0\.0\.1:(\d+)", failed.stderr)
        assert match, failed.stderr
        assert _ray_gone(int(match.group(1))), _commands_naming(match.group(1))
        assert not state.exists()
        assert devnet.poll() is None and devnet_config(url) is not None
        down = _ciro(env, "down", timeout=120)
        assert down.stdout.splitlines() == [
            "stopped: nothing was running",
            f"left running: the devnet of `ciro devnet` on {url} (pid {devnet.pid}); stop it with Ctrl-C where "
            "it runs"], down.stdout + down.stderr

        # 2. `ciro up` killed while its gateway starts: the run-state already names the Ray head and the gateway
        up = subprocess.Popen([CIRO, "up", "--workers", "1"], env=env, stderr=subprocess.PIPE, text=True)
        assert up.stderr is not None
        for line in up.stderr:
            if "starting the gateway" in line:
                break
        up.kill()
        up.wait()
        up.stderr.close()
        record = read_json(state)
        assert record["devnet_started"] is False and record["devnet_pid"] == devnet.pid, record
        ray_pid, gateway_pid = record["ray_pid"], record["gateway_pid"]
        ray_port = int(record["ray_address"].rsplit(":", 1)[1])
        # `ciro up` again waits for that gateway, which comes up with the devnet it was given
        resumed = _ciro(env, "up", "--workers", "1")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"gateway: http://127.0.0.1:{port}" in resumed.stdout and "starting" not in resumed.stderr
        down = _ciro(env, "down", timeout=120)
        assert down.stdout.splitlines()[0] == "stopped: gateway, ray head", down.stdout + down.stderr
        assert down.stdout.splitlines()[1].startswith("left running: the devnet of `ciro devnet`")
        assert not process_alive(gateway_pid) and not process_alive(ray_pid)
        assert _ray_gone(ray_port) and not _listening(port) and not state.exists()
        assert devnet.poll() is None and devnet_config(url) is not None
    finally:
        _ciro(env, "down", timeout=120)
        devnet.send_signal(signal.SIGINT)
        try:
            devnet.wait(timeout=60)
        except subprocess.TimeoutExpired:
            devnet.kill()
            devnet.wait()
    assert devnet.returncode == 0, log.read_text()
    assert not (home / "run" / "devnet.json").exists()  # `ciro devnet` removes its record when it stops
