"""Proving as a Ray task, apart from the inference actors (a proof takes seconds; inference, milliseconds).

The Ray task runs EZKL in a child Python process. Called directly inside a Ray worker process,
``ezkl.prove`` deadlocked here: one of its Rust threads blocked acquiring the GIL (to log) while the
calling thread held it waiting for that thread. A fresh interpreter has no such interference, and
its cost (~0.3 s) is measured in bench/proofs.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["prove_job", "run_setup"]


def prove_job(zk_dir: str, srs_dir: str | None, home: str, inputs: list[np.ndarray], model_hash: str,
              input_commitment: str, output_commitment: str, timeout_s: float = 3600.0) -> dict[str, Any]:
    """Runs on the node holding the model store (the gateway pins it there): keys are read from disk."""
    with tempfile.TemporaryDirectory(prefix="ciro-prove-job-") as tmp:
        t = Path(tmp)
        np.savez(t / "inputs.npz", *inputs)
        (t / "job.json").write_text(json.dumps({
            "zk_dir": zk_dir, "srs_dir": srs_dir, "home": home, "model_hash": model_hash,
            "input_commitment": input_commitment, "output_commitment": output_commitment}))
        try:
            proc = subprocess.run([sys.executable, "-m", "ciro_ray.proving", str(t)], capture_output=True,
                                  text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"the prover did not finish within {timeout_s:.0f}s and was stopped (EZKL 23.0.5 can hang on an "
                "input far outside the range its circuit was calibrated for; raise proof_timeout_s if the "
                "model is just large)") from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the prover exited with code {proc.returncode}: {tail[:400]}")
        artifact: dict[str, Any] = json.loads((t / "artifact.json").read_text())
        return artifact


def run_setup(model: bytes, out_dir: Path, calibration: list[np.ndarray], srs_dir: str | None, home: str,
              input_visibility: str = "public", output_visibility: str = "public") -> None:
    """``ciro.zk.zk_setup`` in a child process, for the same reason as proving (see the module docstring)."""
    from ciro import InvalidModelError

    with tempfile.TemporaryDirectory(prefix="ciro-zk-setup-") as tmp:
        t = Path(tmp)
        (t / "model.onnx").write_bytes(model)
        np.savez(t / "calibration.npz", *calibration)
        (t / "job.json").write_text(json.dumps({"out_dir": str(out_dir), "srs_dir": srs_dir, "home": home,
                                                "input_visibility": input_visibility,
                                                "output_visibility": output_visibility}))
        proc = subprocess.run([sys.executable, "-m", "ciro_ray.proving", str(t), "setup"], capture_output=True,
                              text=True, timeout=24 * 3600)
        if (t / "error.json").is_file():
            raise InvalidModelError(json.loads((t / "error.json").read_text())["message"])
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the zk set-up exited with code {proc.returncode}: {tail[:400]}")


def _setup_main(folder: Path) -> None:
    from ciro import InvalidModelError
    from ciro.zk import zk_setup

    job = json.loads((folder / "job.json").read_text())
    with np.load(folder / "calibration.npz") as z:
        calibration = [z[f"arr_{i}"] for i in range(len(z.files))]
    try:
        zk_setup((folder / "model.onnx").read_bytes(), Path(job["out_dir"]), calibration=calibration,
                 srs_dir=Path(job["srs_dir"]) if job["srs_dir"] else None, home=Path(job["home"]),
                 input_visibility=job["input_visibility"], output_visibility=job["output_visibility"])
    except InvalidModelError as exc:
        (folder / "error.json").write_text(json.dumps({"message": exc.message}))
        sys.exit(3)


def _main(folder: Path) -> None:
    from ciro.zk import ZkSetup, find_srs, zk_prove

    job = json.loads((folder / "job.json").read_text())
    with np.load(folder / "inputs.npz") as z:
        inputs = [z[f"arr_{i}"] for i in range(len(z.files))]
    meta = json.loads((Path(job["zk_dir"]) / "setup.json").read_text())
    srs = find_srs(int(meta["srs"]["logrows"]), srs_dir=Path(job["srs_dir"]) if job["srs_dir"] else None,
                   home=Path(job["home"]), create=False)
    setup = ZkSetup.load(Path(job["zk_dir"]), srs.path)
    artifact = zk_prove(setup, inputs, model_hash=job["model_hash"], input_commitment=job["input_commitment"],
                        output_commitment=job["output_commitment"])
    (folder / "artifact.json").write_text(json.dumps(artifact))


if __name__ == "__main__":
    if sys.argv[2:] == ["setup"]:
        _setup_main(Path(sys.argv[1]))
    else:
        _main(Path(sys.argv[1]))
