"""Schema fuzzing of the live gateway with schemathesis: every operation in /openapi.json, generated and mutated
requests, checked for server errors and for answers the schema does not describe (status codes, content types,
bodies). The gateway is its own (own CIRO_HOME and port) on the session's Ray cluster, so what the fuzzer
creates cannot disturb the other tests; it calls from this machine, so it reaches past the auth layer."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from conftest import TESTS, VENV_BIN, Cluster, free_port

from ciro import CiroClient

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
BUDGET_S = 50


@pytest.fixture(scope="module")
def fuzz_gateway(cluster: Cluster, mlp_path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("fuzz-home")
    port = free_port()
    # the Deploy and estimate pages ask the Hub when online: the fuzzer must never reach huggingface.co
    env = {**cluster.env, "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_WORKER_NUM_CPUS": "0.5",
           "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path_factory.mktemp("fuzz-hf-cache"))}
    gw = Cluster(home, port, cluster.ray_address, f"http://127.0.0.1:{port}", env)
    gw.ciro("up", "--ray-address", cluster.ray_address, "--workers", "1")
    try:
        with CiroClient(gw.url, config=gw.config) as client:  # something for the fuzzer to find
            model = client.deploy(mlp_path, name="mlp")
            client.infer(model.hash, {"x": [[0.0] * 16]})
        yield gw
    finally:
        gw.ciro("down", check=False)


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(fuzz_gateway: Cluster) -> None:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks",
           "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run(
        [str(VENV_BIN / "st"), "run", f"{fuzz_gateway.url}/openapi.json", "--checks", CHECKS,
         "--max-time", str(BUDGET_S), "--seed", "1", "--continue-on-failure", "--no-color"],
        env=env, capture_output=True, text=True, timeout=BUDGET_S + 180, cwd=TESTS)
    out = proc.stdout + proc.stderr
    summary = [line for line in out.splitlines() if "generated" in line]
    assert proc.returncode == 0, out[-6000:]
    assert summary and "found" not in summary[-1], out[-3000:]  # e.g. "9876 generated" and no "N found ..."
    log = (fuzz_gateway.home / "logs" / "gateway.log").read_text()
    assert "Traceback" not in log, log[-4000:]
