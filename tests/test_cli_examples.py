"""The `ciro` CLI and the examples, as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import CIRO, Cluster, free_port

ROOT = Path(__file__).resolve().parents[1]


def test_cli_deploy_infer_jobs_status(cluster: Cluster, digits_path: Path, tmp_path: Path) -> None:
    out = cluster.ciro("deploy", str(digits_path), "--name", "digits-cli").stdout
    assert "deployed digits-cli:" in out and "input  X: float32" in out
    model_hash = out.split("deployed digits-cli: ")[1].split()[0]
    x = np.random.default_rng(0).random((2, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.json").write_text(json.dumps(x.tolist()))
    res = json.loads(cluster.ciro("infer", "digits-cli", "--input", str(tmp_path / "x.npy")).stdout)
    assert res["status"] == "done" and res["model_hash"] == model_hash and len(res["outputs"]["label"]["data"]) == 2
    cluster.ciro("infer", model_hash[:12], "-i", str(tmp_path / "x.json"), "--out", str(tmp_path / "r.npz"))
    with np.load(tmp_path / "r.npz") as z:
        assert z["label"].tolist() == res["outputs"]["label"]["data"]
    assert res["id"] in cluster.ciro("jobs", "--limit", "50").stdout
    assert json.loads(cluster.ciro("status", res["id"]).stdout)["status"] == "done"
    status = cluster.ciro("status").stdout
    assert "ok" in status and "workers: 2" in status
    assert model_hash in cluster.ciro("models").stdout


def test_cli_exit_codes(cluster: Cluster, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 64), np.float32))
    bad = cluster.ciro("infer", "no-such-model", "--input", str(tmp_path / "x.npy"), check=False)
    assert bad.returncode == 4 and "Deploy it first" in bad.stderr
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    bad = cluster.ciro("deploy", str(tmp_path / "junk.onnx"), check=False)
    assert bad.returncode == 4 and "not an ONNX model" in bad.stderr
    bad = cluster.ciro("status", "0" * 32, check=False)
    assert bad.returncode == 6 and "No job" in bad.stderr  # not found, not "job failed" (5)
    bad = cluster.ciro("status", "../models", check=False)  # a path-like id never reaches the gateway
    assert bad.returncode == 6 and "32 hex characters" in bad.stderr
    env = {**cluster.env, "CIRO_PORT": str(free_port())}
    down = subprocess.run([CIRO, "status"], env=env, capture_output=True, text=True)
    assert down.returncode == 3 and "ciro up" in down.stderr
    usage = subprocess.run([CIRO, "infer"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2


def test_sdk_example_attaches_to_the_running_gateway(cluster: Cluster) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "sdk_quickstart.py")], env=cluster.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "output commitment" in proc.stdout and "batch: 64 jobs" in proc.stdout
    assert "starting" not in proc.stderr  # it attached; nothing new was started


def test_cli_example_script(cluster: Cluster) -> None:
    env = {**cluster.env, "PATH": f"{Path(CIRO).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(ROOT / "examples" / "cli_quickstart.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "deployed digits:" in proc.stdout and "done [" in proc.stdout


def test_up_demo_down_on_a_fresh_home_starts_its_own_ray(tmp_path: Path) -> None:
    """`make demo`'s path: nothing running, `ciro demo` starts Ray + gateway, checks outputs; `ciro down`."""
    env = {**os.environ, "CIRO_HOME": str(tmp_path / "home"), "CIRO_PORT": str(free_port()),
           "CIRO_DEVNET_PORT": str(free_port())}
    env.pop("CIRO_GATEWAY_URL", None)
    env.pop("CIRO_SETTLEMENT", None)
    try:
        proc = subprocess.run([CIRO, "demo", "--jobs", "300"], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.rstrip().splitlines()[-1] == "demo: 300/300 outputs match onnxruntime"
        assert "throughput" in proc.stdout and "latency p99" in proc.stdout
        # the embedded default's chain: the paid jobs were prepaid from one CiroLedger deposit, run and settled per
        # worker batch; the deposit went to the workers in full (the ledger keeps nothing)
        assert "paid jobs: 10/10 settled on chain" in proc.stdout, proc.stdout + proc.stderr
        assert "prepaid from one deposit in CiroLedger" in proc.stdout
        moved = {line.split()[0]: line for line in proc.stdout.splitlines() if " CIRO (" in line}
        assert "(-0.0100)" in moved["client"] and "(+0.0000)" in moved["CiroLedger"]
        paid_workers = [line for line in proc.stdout.splitlines() if " CIRO (" in line and line.split()[0] == "worker"]
        earned = sum(float(line.rsplit("(", 1)[1].rstrip(")")) for line in paid_workers)
        assert paid_workers and round(earned, 4) == 0.01
    finally:
        down = subprocess.run([CIRO, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert "gateway" in down.stdout and "ray head" in down.stdout and "devnet" in down.stdout
    assert not (tmp_path / "home" / "run" / "local.json").exists()


def test_cli_keys_and_offline_verify(cluster: Cluster, digits_path: Path, tmp_path: Path) -> None:
    out = cluster.ciro("keys", "new", "client-1").stdout
    assert out.startswith("client-1: 0x")
    assert "client-1" in cluster.ciro("keys", "list").stdout
    assert cluster.ciro("keys", "show", "client-1").stdout == out
    assert cluster.ciro("keys", "new", "client-1", check=False).returncode == 1
    cluster.ciro("deploy", str(digits_path), "--name", "digits-verify")
    x = np.random.default_rng(5).random((1, 64)).astype(np.float32)
    np.savez(tmp_path / "x.npz", X=x)
    cluster.ciro("infer", "digits-verify", "-i", str(tmp_path / "x.npz"), "--out", str(tmp_path / "r.json"))
    good = cluster.ciro("verify", str(tmp_path / "r.json"), "--model", str(digits_path), "-i", str(tmp_path / "x.npz"))
    assert good.stdout.rstrip().splitlines()[-1].startswith("VALID")
    for check in ("output commitment", "input commitment", "model hash", "receipt signature"):
        assert f"[ok] {check}" in good.stdout
    r = json.loads((tmp_path / "r.json").read_text())
    r["outputs"]["probabilities"]["data"][0] += 0.01
    (tmp_path / "bad.json").write_text(json.dumps(r))
    bad = cluster.ciro("verify", str(tmp_path / "bad.json"), check=False)
    assert bad.returncode == 1 and "[FAIL] output commitment" in bad.stdout and "INVALID" in bad.stdout
    np.savez(tmp_path / "other.npz", X=x + 1)
    bad = cluster.ciro("verify", str(tmp_path / "r.json"), "-i", str(tmp_path / "other.npz"), check=False)
    assert bad.returncode == 1 and "[FAIL] input commitment" in bad.stdout
