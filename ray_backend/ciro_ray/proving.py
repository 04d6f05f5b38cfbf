"""Proving in a dedicated Ray actor, apart from the inference actors (a proof takes seconds; inference,
milliseconds).

The actor (:class:`Prover`, one per gateway, on the model store's node) does not call EZKL itself:
called directly inside a Ray worker process, ``ezkl.prove`` deadlocked here (one of its Rust threads
blocked acquiring the GIL, to log, while the calling thread held it waiting for that thread). It keeps
warm child Python processes instead, one per concurrent proof, each with EZKL already imported, and
hands them one job at a time. A child that fails, or runs past the proof timeout (EZKL 23.0.5 can hang
on an input far outside the range its circuit was calibrated for), is killed and replaced. Warm
children save the ~0.5 s of interpreter start and imports a fresh process paid per proof.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Prover", "run_setup"]

_DONE = "CIRO-PROVER-DONE"


class _Child:
    """One warm prover process: reads job folders on stdin, answers ``CIRO-PROVER-DONE <folder>``."""

    def __init__(self) -> None:
        # stderr to a file, not a pipe: nobody reads it while the child is healthy, and a full pipe would block it
        self._err = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the child; closed in kill)
        self.proc = subprocess.Popen([sys.executable, "-m", "ciro_ray.proving", "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err)
        self._buf = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, folder: Path, timeout_s: float) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{folder}\n".encode())
        self.proc.stdin.flush()
        want = f"{_DONE} {folder}".encode()
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.strip() == want:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError(self._stderr_tail())
                self._buf += chunk

    def _stderr_tail(self) -> str:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self._err.seek(0)
        err = self._err.read().decode(errors="replace")
        self.kill()
        return (err.strip().splitlines() or [f"exit code {self.proc.returncode}"])[-1][:400]

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._err.close()


class Prover:
    """Ray actor (``max_concurrency`` = concurrent proofs) that proves zk jobs with warm child processes."""

    def __init__(self) -> None:
        self._idle: list[_Child] = []
        self._lock = threading.Lock()

    def warm(self) -> int:
        """Start one child ahead of the first proof (called after a zk set-up); returns the idle count."""
        with self._lock:
            if not self._idle:
                self._idle.append(_Child())
            return len(self._idle)

    def prove(self, zk_dir: str, srs_dir: str | None, home: str, inputs: list[np.ndarray], model_hash: str,
              input_commitment: str, output_commitment: str, outputs: list[np.ndarray] | None = None,
              timeout_s: float = 3600.0) -> dict[str, Any]:
        """Prove the model on ``inputs``; returns ``{"artifact", "output_gap", "tolerance"}``. ``output_gap`` is
        how far the proven outputs are from the worker's ``outputs`` (None when none are given): beyond
        ``tolerance``, the worker's result is not what the model computes, and the proof is the evidence.

        Runs on the node holding the model store (the gateway pins it there): keys are read from disk."""
        job = {"inputs": inputs, "input_commitment": input_commitment, "output_commitment": output_commitment,
               "outputs": outputs}
        return self._run(zk_dir, srs_dir, home, model_hash, [job], timeout_s, batch=False)[0]

    def prove_batch(self, zk_dir: str, srs_dir: str | None, home: str, model_hash: str, jobs: list[dict[str, Any]],
                    timeout_s: float = 3600.0) -> list[dict[str, Any]]:
        """One proof for ``jobs`` (each ``{"inputs", "input_commitment", "output_commitment", "outputs"}``, one
        row) with the (model, B) set-up in ``zk_dir`` (``ciro.zk_batch``); each job's result as :meth:`prove`'s."""
        return self._run(zk_dir, srs_dir, home, model_hash, jobs, timeout_s, batch=True)

    def _run(self, zk_dir: str, srs_dir: str | None, home: str, model_hash: str, jobs: list[dict[str, Any]],
             timeout_s: float, batch: bool) -> list[dict[str, Any]]:
        child = None
        with self._lock:
            while self._idle and child is None:
                c = self._idle.pop()
                child = c if c.alive() else None
        child = child or _Child()
        with tempfile.TemporaryDirectory(prefix="ciro-prove-job-") as tmp:
            t = Path(tmp)
            for i, j in enumerate(jobs):
                np.savez(t / f"inputs-{i}.npz", *j["inputs"])
                if j.get("outputs") is not None:
                    np.savez(t / f"outputs-{i}.npz", *j["outputs"])
            (t / "job.json").write_text(json.dumps({
                "zk_dir": zk_dir, "srs_dir": srs_dir, "home": home, "model_hash": model_hash, "batch": batch,
                "commitments": [[j["input_commitment"], j["output_commitment"]] for j in jobs]}))
            try:
                child.run(t, timeout_s)
            except TimeoutError:
                child.kill()
                raise RuntimeError(
                    f"the prover did not finish within {timeout_s:.0f}s and was stopped (EZKL 23.0.5 can hang on "
                    "an input far outside the range its circuit was calibrated for; raise proof_timeout_s if the "
                    "model is just large)") from None
            except EOFError as exc:
                raise RuntimeError(f"the prover process died: {exc}") from None
            if (t / "error.json").is_file():
                child.kill()  # a failed EZKL call may leave the process in a bad state: start afresh next time
                raise RuntimeError(json.loads((t / "error.json").read_text())["message"])
            results: list[dict[str, Any]] = json.loads((t / "result.json").read_text())["results"]
        with self._lock:
            self._idle.append(child)
        return results

    def stop(self) -> None:
        with self._lock:
            for c in self._idle:
                c.kill()
            self._idle.clear()


def run_setup(model: bytes, out_dir: Path, calibration: list[np.ndarray], srs_dir: str | None, home: str,
              input_visibility: str = "public", output_visibility: str = "public", batch: int = 1) -> None:
    """``ciro.zk.zk_setup`` in a child process, for the same reason as proving (see the module docstring)."""
    from ciro import InvalidModelError

    with tempfile.TemporaryDirectory(prefix="ciro-zk-setup-") as tmp:
        t = Path(tmp)
        (t / "model.onnx").write_bytes(model)
        np.savez(t / "calibration.npz", *calibration)
        (t / "job.json").write_text(json.dumps({"out_dir": str(out_dir), "srs_dir": srs_dir, "home": home,
                                                "input_visibility": input_visibility,
                                                "output_visibility": output_visibility, "batch": batch}))
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
    calibration = _load(folder / "calibration.npz")
    try:
        zk_setup((folder / "model.onnx").read_bytes(), Path(job["out_dir"]), calibration=calibration,
                 srs_dir=Path(job["srs_dir"]) if job["srs_dir"] else None, home=Path(job["home"]),
                 input_visibility=job["input_visibility"], output_visibility=job["output_visibility"],
                 batch=int(job.get("batch", 1)))
    except InvalidModelError as exc:
        (folder / "error.json").write_text(json.dumps({"message": exc.message}))
        sys.exit(3)


def _load(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _prove_main(folder: Path) -> None:
    from ciro.zk import ZkSetup, find_srs, zk_prove
    from ciro.zk_batch import prove_batch
    from ciro.zk_verify import output_gap, output_tolerance

    job = json.loads((folder / "job.json").read_text())
    commitments = [tuple(c) for c in job["commitments"]]
    inputs = [_load(folder / f"inputs-{i}.npz") for i in range(len(commitments))]
    meta = json.loads((Path(job["zk_dir"]) / "setup.json").read_text())
    srs = find_srs(int(meta["srs"]["logrows"]), srs_dir=Path(job["srs_dir"]) if job["srs_dir"] else None,
                   home=Path(job["home"]), create=False)
    setup = ZkSetup.load(Path(job["zk_dir"]), srs.path)
    if job["batch"]:
        artifacts = prove_batch(setup, inputs, model_hash=job["model_hash"], commitments=commitments)
    else:
        artifacts = [zk_prove(setup, inputs[0], model_hash=job["model_hash"], input_commitment=commitments[0][0],
                              output_commitment=commitments[0][1])]
    results = []
    for i, artifact in enumerate(artifacts):
        gap = None
        if (folder / f"outputs-{i}.npz").is_file():
            gap = output_gap(artifact, outputs=_load(folder / f"outputs-{i}.npz"), inputs=inputs[i])
        results.append({"artifact": artifact, "output_gap": gap, "tolerance": output_tolerance(artifact)})
    (folder / "result.json").write_text(json.dumps({"results": results}))


def _serve() -> None:
    """The warm child: EZKL imported once, then one job folder per stdin line until stdin closes."""
    import ezkl  # noqa: F401  (the import is the point: paid once, not per proof)

    import ciro.zk  # noqa: F401

    out = os.fdopen(os.dup(1), "w")  # EZKL writes to fd 1 too; our protocol lines are whole lines
    for line in sys.stdin:
        folder = Path(line.strip())
        try:
            _prove_main(folder)
        except BaseException as exc:  # EZKL raises pyo3's PanicException, a BaseException
            (folder / "error.json").write_text(json.dumps({"message": f"{type(exc).__name__}: {exc}"[:2000]}))
        out.write(f"{_DONE} {folder}\n")
        out.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        _serve()
    elif sys.argv[2:] == ["setup"]:
        _setup_main(Path(sys.argv[1]))
