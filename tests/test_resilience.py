"""Worker death and gateway restart: every accepted job completes, exactly one result each."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import numpy as np
import onnxruntime as ort

from ciro import CiroClient, JobStatus, ModelInfo
from ciro.local import ray_env, read_state


def _done_counter(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics") as r:
        text = r.read().decode()
    m = re.search(r'^ciro_jobs_finished_total\{status="done"\} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _killer(ray_address: str, actor_name: str) -> subprocess.Popen[str]:
    """A process attached to the cluster that kills the actor when it reads a line."""
    code = ("import ray, sys\n"
            f"ray.init(address='{ray_address}', namespace='ciro', logging_level='ERROR')\n"
            f"actor = ray.get_actor('{actor_name}')\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "ray.kill(actor, no_restart=True)\n"
            "print('killed', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=ray_env(os.environ))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_killing_a_worker_actor_mid_run_loses_and_duplicates_nothing(client: CiroClient, cluster,  # type: ignore[no-untyped-def]
                                                                      mlp: ModelInfo, mlp_path) -> None:
    x = np.random.default_rng(7).standard_normal((200, 16)).astype(np.float32)
    want = ort.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    done_before = _done_counter(cluster.url)
    victim = client.workers()[0]
    killer = _killer(cluster.ray_address, victim["actor_name"])
    ids: list[str] = []
    for i in range(0, 200, 4):  # keep jobs flowing while the worker dies
        ids += client.submit_batch(mlp.hash, x[i:i + 4])
        if i == 60:
            assert killer.stdin is not None and killer.stdout is not None
            killer.stdin.write("go\n")
            killer.stdin.flush()
            assert killer.stdout.readline().strip() == "killed"
        time.sleep(0.01)
    killer.wait(timeout=60)
    results = [client.wait(j, timeout=120) for j in ids]
    assert [r.status for r in results] == [JobStatus.DONE] * 200
    np.testing.assert_allclose(np.concatenate([r.output for r in results]), want, rtol=1e-5, atol=1e-6)
    assert len({r.job_id for r in results}) == 200
    assert _done_counter(cluster.url) - done_before == 200  # each job delivered exactly once
    assert any(r.attempts >= 2 for r in results)  # some jobs were in the dead worker's hands and re-ran
    workers = client.workers()
    assert len(workers) == 2 and victim["actor_name"] not in {w["actor_name"] for w in workers}


def test_gateway_restart_with_jobs_queued_completes_them_all(client: CiroClient, cluster,  # type: ignore[no-untyped-def]
                                                             mlp: ModelInfo, mlp_path) -> None:
    x = np.random.default_rng(8).standard_normal((300, 16)).astype(np.float32)
    want = ort.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ids = client.submit_batch(mlp.hash, x)  # acknowledged = committed to the job store
    pid = read_state(cluster.config)["gateway_pid"]
    os.kill(pid, signal.SIGKILL)  # no graceful shutdown
    db = sqlite3.connect(cluster.home / "jobs.db")
    marks = ",".join("?" * len(ids))
    left = db.execute(f"SELECT COUNT(*) FROM jobs WHERE status!='done' AND id IN ({marks})", ids).fetchone()[0]
    db.close()
    t0 = time.monotonic()
    cluster.ciro("up", "--ray-address", cluster.ray_address, "--workers", "2")
    restart_s = time.monotonic() - t0
    results = [client.wait(j, timeout=120) for j in ids]
    assert [r.status for r in results] == [JobStatus.DONE] * 300
    np.testing.assert_allclose(np.concatenate([r.output for r in results]), want, rtol=1e-5, atol=1e-6)
    print(f"{left} of 300 jobs were not done when the gateway was killed; restart took {restart_s:.1f}s")
