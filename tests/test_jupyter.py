"""The %ciro magics, loaded into a fresh IPython shell the way users load them (`%load_ext ciro`), against the
session's gateway; and examples/quickstart.ipynb executed by `jupyter nbconvert --execute`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from conftest import VENV_BIN, Cluster, free_port
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from ciro import CiroClient, JobResult, JobStatus, VerificationReport

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def shell(cluster: Cluster, client: CiroClient, mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for k, v in cluster.env.items():
        if k.startswith("CIRO_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("CIRO_GATEWAY_URL", cluster.url)
    client.deploy(mlp_path, name="nb-mlp")
    sh = InteractiveShell()
    sh.run_line_magic("load_ext", "ciro")
    sh.user_ns["np"], sh.user_ns["pd"] = np, pd
    yield sh
    sh.cleanup()  # type: ignore[no-untyped-call]
    InteractiveShell.clear_instance()


def _magics(sh: Any) -> Any:
    return sh.magics_manager.registry["CiroMagics"]


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(None, {"x": x})[0]


def test_line_and_cell_magics_with_arrays_dataframes_and_assignment(shell: Any, mlp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    shell.user_ns["x"] = x
    r = shell.run_line_magic("ciro", "infer nb-mlp x")
    assert isinstance(r, JobResult) and r.status is JobStatus.DONE
    assert np.allclose(r.outputs["y"], _ort(mlp_path, x), atol=1e-5) and r.receipt is not None
    m = _magics(shell)
    assert m.last_status.state == "done" and "done" in m.last_status.widget.value  # the live status line
    assert "proves" in m.last_card.text() and m.last_card.result.job_id == r.job_id

    res = shell.run_cell("r2 = %ciro infer nb-mlp x --verify none")  # assignment from a line magic
    assert res.success and shell.user_ns["r2"].verification.value == "none"

    shell.user_ns["df"] = pd.DataFrame(x.astype(np.float64))
    r3 = shell.run_line_magic("ciro", "infer nb-mlp df")
    assert np.allclose(r3.outputs["y"], _ort(mlp_path, x), atol=1e-5)  # cast to the model's float32

    r4 = shell.run_cell_magic("ciro", "infer nb-mlp", "np.ones((1, 16), np.float32)")
    assert np.allclose(r4.outputs["y"], _ort(mlp_path, np.ones((1, 16), np.float32)), atol=1e-5)
    r5 = shell.run_cell_magic("ciro", "infer nb-mlp", json.dumps([[0.5] * 16]))  # JSON in the cell body
    assert np.allclose(r5.outputs["y"], _ort(mlp_path, np.full((1, 16), 0.5, np.float32)), atol=1e-5)

    report = shell.run_line_magic("ciro", "verify r2")
    assert isinstance(report, VerificationReport) and report.valid

    card = m.last_card  # the Verify button runs the offline check without blocking the caller
    card.verify_button.click()
    assert card.verifying is not None and card.verifying.result(timeout=60).valid
    assert "VALID" in card.report_html.value and not card.verify_button.disabled


def test_infer_input_is_any_python_expression_or_a_file(shell: Any, mlp_path: Path, tmp_path: Path) -> None:
    X = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    shell.user_ns["X"] = X
    r = shell.run_line_magic("ciro", "infer nb-mlp X[:3]")
    assert np.allclose(r.outputs["y"], _ort(mlp_path, X[:3]), atol=1e-5) and len(r.outputs["y"]) == 3
    ones = np.ones((1, 16), np.float32)
    r = shell.run_line_magic("ciro", "infer nb-mlp np.ones((1, 16), np.float32) --verify none")  # spaces inside
    assert r.verification.value == "none" and np.allclose(r.outputs["y"], _ort(mlp_path, ones), atol=1e-5)
    r = shell.run_line_magic("ciro", "infer --verify none nb-mlp X[1:2] * 2 + 1")  # options first; spaced operators
    assert np.allclose(r.outputs["y"], _ort(mlp_path, X[1:2] * 2 + 1), atol=1e-5)
    # A set literal: IPython's {expr} expansion would have turned it into `2`; INPUT is Python, as the user wrote it.
    res = shell.run_cell("r6 = %ciro infer nb-mlp np.stack([X[i] for i in {2}])")
    assert res.success and np.allclose(shell.user_ns["r6"].outputs["y"], _ort(mlp_path, X[2:3]), atol=1e-5)
    shell.user_ns["dep"] = "nb-mlp"  # $name still expands outside INPUT
    assert shell.run_line_magic("ciro", "infer $dep X[4:]").status is JobStatus.DONE
    # An existing path is a file, quoted when it has spaces.
    np.save(tmp_path / "two rows.npy", X[:2])
    r = shell.run_line_magic("ciro", f'infer nb-mlp "{tmp_path / "two rows.npy"}"')
    assert np.allclose(r.outputs["y"], _ort(mlp_path, X[:2]), atol=1e-5)
    np.save(tmp_path / "one.npy", X[:1])
    assert len(shell.run_line_magic("ciro", f"infer nb-mlp {tmp_path / 'one.npy'}").outputs["y"]) == 1


def test_async_infer_returns_at_once_and_its_status_reaches_done(shell: Any) -> None:
    shell.user_ns["x"] = np.ones((1, 16), np.float32)
    handle = shell.run_line_magic("ciro", "infer nb-mlp x --async")
    assert handle.job_id and repr(handle).startswith("JobHandle(")
    result = handle.result(timeout=60)
    assert result.status is JobStatus.DONE and handle.done()
    assert handle.status_line.state == "done" and handle.card is not None
    assert handle.card.widget in handle._box.children  # the card joined the status line


def test_jobs_status_deploy_config_and_help(shell: Any, mlp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shell.user_ns["x"] = np.ones((1, 16), np.float32)
    done = shell.run_line_magic("ciro", "infer nb-mlp x")
    jobs = shell.run_line_magic("ciro", "jobs --limit 5")
    assert done.job_id in {j.job_id for j in jobs}
    status = shell.run_line_magic("ciro", "status")
    assert status["health"]["status"] == "ok" and len(status["workers"]) == 2
    info = shell.run_line_magic("ciro", f"deploy {mlp_path} --name nb-mlp-2")
    assert info.name == "nb-mlp-2"
    r = shell.run_line_magic("ciro", f"infer {mlp_path} x")  # an ONNX path as MODEL
    assert r.model_hash == info.hash
    shown = shell.run_line_magic("ciro", "config verification=none")
    assert shown["verification"] == "none"
    assert shell.run_line_magic("ciro", "infer nb-mlp x").verification.value == "none"
    shell.run_line_magic("ciro", "help")
    assert "%ciro infer MODEL INPUT" in capsys.readouterr().out


@pytest.mark.parametrize(("line", "message"), [
    ("", "needs a command"),
    ("frobnicate", "Unknown %ciro command"),
    ("infer", "the following arguments are required: model"),
    ("infer nb-mlp", "name the input"),
    ("infer nb-mlp nothing_here", "No variable 'nothing_here'"),
    ("infer nb-mlp ./no/such/file.npy", "No file './no/such/file.npy', and as a Python expression it fails"),
    ("infer nb-mlp x[", r"cannot evaluate the input 'x\['.*SyntaxError"),
    ("infer nb-mlp np.ones((1, 16), np.flot32)", r"cannot evaluate the input 'np.ones\(\(1, 16\), np.flot32\)': "
                                                  "AttributeError: .*flot32"),
    ("infer nb-mlp x + undefined_name", r"NameError: name 'undefined_name' is not defined"),
    ("infer no-such-model x", "No model 'no-such-model'"),
    ("infer nb-mlp x --verify maybe", "Unknown verification level"),
    ("infer nb-mlp text", "text and image input needs a model with a processor bundle"),
    ("infer nb-mlp x --gpu", "No worker of this gateway fits this job: it requires a GPU.*Submit without gpu"),
    ("infer nb-mlp x --gpu-model H100 --gpu-memory-gb 40", "it requires a GPU, model H100, at least 40 GB"),
    ("infer nb-mlp x --cpu-only --gpu", "cpu_only cannot be combined with gpu"),
    ("infer nb-mlp bad", r"Input .x. has shape \[1, 3\]; the model expects"),
    ("config colour=blue", "Unknown setting"),
    ("verify nothing_here", "No variable 'nothing_here'"),
    ("deploy /no/model.onnx", "No model file"),
])
def test_user_mistakes_raise_usage_error(shell: Any, line: str, message: str) -> None:
    shell.user_ns.update(x=np.ones((1, 16), np.float32), text="hello", bad=np.ones((1, 3), np.float32))
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("ciro", line)


def test_no_gateway_is_a_usage_error(shell: Any) -> None:
    shell.user_ns["x"] = np.ones((1, 16), np.float32)
    shell.run_line_magic("ciro", f"config gateway_url=http://127.0.0.1:{free_port()}")
    with pytest.raises(UsageError, match="No Ciro gateway answers"):
        shell.run_line_magic("ciro", "infer nb-mlp x")


def test_quickstart_notebook_executes_with_nbconvert(cluster: Cluster, tmp_path: Path) -> None:
    env = {**cluster.env, "CIRO_GATEWAY_URL": cluster.url, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "JUPYTER_PLATFORM_DIRS": "1"}
    out = tmp_path / "quickstart.ipynb"
    proc = subprocess.run([str(VENV_BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                           "--ExecutePreprocessor.timeout=300", "--output", str(out),
                           str(ROOT / "examples" / "quickstart.ipynb")],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = json.loads(out.read_text())
    text = "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                     for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "error" not in {o.get("output_type") for c in nb["cells"] for o in c.get("outputs", [])}
    assert "ciro job" in text and "done" in text  # the status lines, as text
    assert "VALID: proves" in text  # the verification report
    assert "verification" in text and "receipt" in text  # the result card's text form
    assert "status" in text and "latency" in text  # the jobs table's text form
