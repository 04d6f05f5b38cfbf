"""Running a devnet: in this process (a background thread) or as a `python -m ciro_devnet` subprocess.

One launcher for the subprocess (:class:`DevnetProcess`: the tests' devnets and the one `ciro up` starts) and one
readiness check (:func:`devnet_ready`: `devnet_getConfig` answers with `ready: true`, which a devnet started with
`--home` says only once the Ciro contracts are deployed and recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from ciro import CiroError
from ciro.home import HomePaths
from ciro.procs import devnet_record, free_port, owned, read_json, spawn, stop, wait_ready, write_json

from .accounts import PredeployedAccount
from .chain import Devnet
from .rpc import RpcServer

T = TypeVar("T")


async def start_server(
    devnet: Devnet, host: str = "127.0.0.1", port: int = 5050, *, ready: bool = True
) -> tuple[web.AppRunner, str, RpcServer]:
    """Serve a devnet on the running loop; returns the runner (`await runner.cleanup()` stops it), the URL and the
    server (whose one worker thread runs every chain call). With `ready=False`, `devnet_getConfig` says `ready: false`
    until `server.ready` is set (work to do on the chain before anyone uses it)."""
    server = RpcServer(devnet, ready=ready)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}/rpc", server


class DevnetThread:
    """A devnet serving from a background thread of this process (the chain is `self.devnet`)."""

    def __init__(self, devnet: Devnet, host: str = "127.0.0.1", port: int = 0) -> None:
        self.devnet = devnet
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(host, port), name="ciro-devnet-rpc", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve(host, port))

    async def _serve(self, host: str, port: int) -> None:
        try:
            runner, self.url, self._server = await start_server(self.devnet, host, port)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopped.wait()
        await runner.cleanup()

    @property
    def accounts(self) -> list[PredeployedAccount]:
        return self.devnet.accounts

    def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `function(*args, **kwargs)` on the chain's worker thread (between RPC calls), e.g.
        `thread.run(thread.devnet.deploy_predeclared, class_hash, calldata)` while the server is up."""
        return self._server.executor.submit(function, *args, **kwargs).result()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=30)

    def __enter__(self) -> DevnetThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_devnet_thread(*, host: str = "127.0.0.1", port: int = 0, **devnet_options: Any) -> DevnetThread:
    """Create a `Devnet(**devnet_options)` and serve it from a background thread; `.url`, `.stop()`."""
    return DevnetThread(Devnet(**devnet_options), host, port)


def rpc_request(url: str, method: str, params: Any = None, timeout: float = 30) -> Any:
    """One JSON-RPC call with the standard library (for launchers and scripts; tests use starknet-py)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def devnet_ready(url: str) -> bool:
    """Whether the Ciro devnet at `url` answers JSON-RPC and says it is ready (see the module's docstring)."""
    config = devnet_config(url, timeout=1.0)
    return config is not None and config.get("ready") is True


class DevnetProcess:
    """A `python -m ciro_devnet` subprocess, its output appended to `log_path`. Started by the constructor, which
    waits until it is ready unless `wait=False` (then call :meth:`wait_ready`); `.url`, `.accounts`, `.stop()`.
    `detach` runs it in a session of its own (it outlives this process: `ciro up`'s); `home` deploys the Ciro
    contracts and records them in `home/chain.json` before it is ready."""

    def __init__(
        self,
        *,
        port: int | None = None,
        state_dir: str | Path | None = None,
        accounts: int | None = None,
        seed: int | None = None,
        chain_id: str | None = None,
        home: str | Path | None = None,
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        detach: bool = False,
        wait: bool = True,
        startup_timeout: float = 90,
        python: str = sys.executable,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/rpc"
        command = [python, "-m", "ciro_devnet", "--port", str(self.port)]
        for flag, value in (("--state", state_dir), ("--accounts", accounts), ("--seed", seed),
                            ("--chain-id", chain_id), ("--home", home)):
            if value is not None:
                command += [flag, str(value)]
        self.command = command
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"ciro-devnet-{self.port}.log"
        self.accounts: list[PredeployedAccount] = []
        self.process = spawn(command, log=self.log_path, env=env, detach=detach)
        if wait:
            try:
                self.wait_ready(startup_timeout)
            except BaseException:
                self.stop()
                raise

    def wait_ready(self, timeout: float, *, retry: str = "start it again") -> None:
        """Until the devnet is ready (:func:`devnet_ready`); a CiroError with its log's tail if it exits first."""
        wait_ready(self.process, lambda: devnet_ready(self.url), what="The devnet", log=self.log_path,
                   timeout_s=timeout, retry=retry)
        self.accounts = [
            PredeployedAccount.from_json(a) for a in rpc_request(self.url, "devnet_getPredeployedAccounts")
        ]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (the chain is saved after every block already), then SIGKILL after `timeout`."""
        return stop(self.process, timeout)

    def __enter__(self) -> DevnetProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_devnet_process(**options: Any) -> DevnetProcess:
    """Start `python -m ciro_devnet` on a free port and wait until it is ready; `.url`, `.accounts`, `.stop()`."""
    return DevnetProcess(**options)


# -- the devnet of a CIRO_HOME: `ciro devnet` records itself, `ciro up` finds it -----------------------------------


def devnet_config(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """`devnet_getConfig` of the Ciro devnet answering at `url`; None when nothing answers, or not a Ciro devnet."""
    try:
        config = rpc_request(url, "devnet_getConfig", timeout=timeout)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, http.client.HTTPException):
        return None
    return config if isinstance(config, dict) and "chain_id" in config and "state_dir" in config else None


def _same_dir(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def home_devnet(home: Path, port: int) -> dict[str, Any] | None:
    """This home's devnet when it answers on `port`: its `devnet_getConfig` answer, with `pid` and `cmd` of the
    `ciro devnet` serving it when that recorded itself. It is this home's when its state folder is `home/devnet`, or
    the one a running `ciro devnet` of this home recorded for that port; None for anything else."""
    config = devnet_config(f"http://127.0.0.1:{port}/rpc")
    if config is None or not config["state_dir"]:
        return None
    record = read_json(devnet_record(home))
    live = record.get("port") == port and owned(record.get("pid"), record.get("cmd"))
    mine = [HomePaths(home).devnet, *([record["state_dir"]] if live and record.get("state_dir") else [])]
    if not any(_same_dir(config["state_dir"], d) for d in mine):
        return None
    return {**config, "pid": record["pid"] if live else None, "cmd": record["cmd"] if live else None}


def check_devnet_port(home: Path, port: int) -> None:
    """`ciro devnet`: say what holds `port` (instead of a bind error) when something already does."""
    url = f"http://127.0.0.1:{port}/rpc"
    config = devnet_config(url)
    if config is not None:
        mine = home_devnet(home, port) is not None
        raise CiroError(f"A Ciro devnet already answers on {url} (state in {config['state_dir'] or 'memory'}). "
                        + ("It is this home's: `ciro up` uses it as it is; `ciro down` stops it if `ciro up` "
                           "started it." if mine else "Stop it, or start this one on another port: "
                           "`ciro devnet --port P` (then `ciro up --devnet-port P`)."))
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return
    raise CiroError(f"Port {port} is taken by something that is not a Ciro devnet. Stop it, or choose another port: "
                    "`ciro devnet --port P` (then `ciro up --devnet-port P`, or CIRO_DEVNET_PORT=P for both).")


def _this_command() -> list[str]:
    try:
        return Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
    except OSError:
        return [sys.executable, *sys.argv]


@contextlib.contextmanager
def recorded_devnet(home: Path, *, port: int, state_dir: Path) -> Iterator[None]:
    """`ciro devnet` runs inside this: `home/run/devnet.json` names this process (pid, command line, port, state
    folder) as the home's devnet while it runs, so `ciro up` uses it and `ciro down` leaves it running."""
    path = devnet_record(home)
    pid = os.getpid()
    write_json(path, {"pid": pid, "cmd": _this_command(), "port": port, "url": f"http://127.0.0.1:{port}/rpc",
                      "state_dir": str(state_dir.expanduser().resolve())})
    try:
        yield
    finally:
        if read_json(path).get("pid") == pid:
            path.unlink(missing_ok=True)
