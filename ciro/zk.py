"""Zero-knowledge proofs of inference with EZKL (Halo2 + KZG), set up once per model.

Set-up (``zk_setup``): settings with the model's weights ``fixed`` (so the verifying key binds the
model), calibration, circuit compilation, an SRS, proving and verifying keys. Cached under the
model's folder in the model store. Proving (``zk_prove``) makes a witness from a job's exact inputs
and a proof whose public instances are the quantised inputs and outputs. The verifier's side (checking an
artifact against keys the verifier chose) is ``ciro.zk_verify``.

SRS: with ``srs_dir`` set, ``kzg{logrows}.srs`` must be listed with its SHA-256 in
``srs_dir/SHA256SUMS`` (public-ceremony files, pinned by the operator). Without it a development
SRS is generated locally: a proof against it is NOT sound against whoever generated that SRS (they
could forge proofs), and every artifact made with one says so.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, InputError, InvalidModelError
from .home import HomePaths

__all__ = ["DEV_SRS_WARNING", "MAX_ZK_ROWS", "SrsInfo", "ZkSetup", "find_srs", "srs_pinned", "zk_precheck",
           "zk_prove", "zk_setup"]

DEV_SRS_WARNING = ("proven with a DEVELOPMENT SRS generated on this machine: the proof is not sound against "
                   "whoever generated that SRS; use public-ceremony SRS files (CIRO_SRS_DIR) for real assurance")
#: What the proof's public instances hold for the inputs / the outputs: the quantised values themselves
#: ("public"), or one Poseidon hash per tensor of them (EZKL's "hashed/public": fewer public values,
#: and the inputs need not be shown to a verifier, who can check them only if given them).
VISIBILITIES = {"public": "public", "hashed": "hashed/public"}


def _ezkl() -> Any:
    try:
        import ezkl
    except ImportError as exc:
        raise ConfigError("Zero-knowledge proofs need EZKL: pip install 'ciro-network[zk]'.") from exc
    return ezkl


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """EZKL's Rust code prints tables to file descriptors 1 and 2; send them to /dev/null instead
    (its errors still arrive as Python exceptions)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class SrsInfo:
    kind: str  # "pinned" or "development"
    logrows: int
    path: Path
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "logrows": self.logrows, "name": self.path.name, "sha256": self.sha256}


def find_srs(logrows: int, *, srs_dir: Path | None, home: Path, create: bool = True) -> SrsInfo:
    """The SRS for ``logrows``: pinned from ``srs_dir``, else a cached development SRS."""
    if srs_dir is not None:
        path = srs_dir / f"kzg{logrows}.srs"
        pins = _read_pins(srs_dir / "SHA256SUMS")
        if not path.is_file() or path.name not in pins:
            raise ConfigError(
                f"CIRO_SRS_DIR={srs_dir} has no pinned {path.name} (a file plus its SHA-256 in SHA256SUMS). Add the "
                "public-ceremony file, or unset CIRO_SRS_DIR to use a development SRS (not sound).")
        digest = sha256_file(path)
        if digest != pins[path.name]:
            raise ConfigError(f"{path} has SHA-256 {digest}, not the pinned {pins[path.name]}. Replace the file.")
        return SrsInfo("pinned", logrows, path, digest)
    path = HomePaths(home).srs / f"dev-kzg{logrows}.srs"
    if not path.is_file():
        if not create:
            raise ConfigError(f"No development SRS for logrows={logrows} at {path}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with _quiet():
            _ezkl().gen_srs(str(tmp), logrows)
        os.replace(tmp, path)
    return SrsInfo("development", logrows, path, sha256_file(path))


def _read_pins(path: Path) -> dict[str, str]:
    pins = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                pins[parts[1].lstrip("*")] = parts[0].lower()
    return pins


def srs_pinned(digest: str, srs_dir: str | os.PathLike[str] | None) -> bool:
    """Whether an SRS with this SHA-256 is listed in ``srs_dir/SHA256SUMS`` (the verifier's own pins)."""
    return srs_dir is not None and digest.lower() in _read_pins(Path(srs_dir) / "SHA256SUMS").values()


@dataclass(frozen=True)
class ZkSetup:
    dir: Path
    logrows: int
    num_rows: int
    settings_hash: str
    vk_hash: str
    srs: SrsInfo
    input_visibility: str
    output_visibility: str
    calibration_max_abs_error: float
    batch: int = 1  # rows of the circuit (the model's batch dim fixed at this size; ciro.zk_batch)

    @property
    def settings_path(self) -> Path:
        return self.dir / "settings.json"

    @property
    def compiled_path(self) -> Path:
        return self.dir / "model.compiled"

    @property
    def pk_path(self) -> Path:
        return self.dir / "pk.key"

    @property
    def vk_path(self) -> Path:
        return self.dir / "vk.key"

    def to_dict(self) -> dict[str, Any]:
        return {"status": "ready", "logrows": self.logrows, "num_rows": self.num_rows,
                "settings_hash": self.settings_hash, "vk_hash": self.vk_hash, "srs": self.srs.to_dict(),
                "input_visibility": self.input_visibility, "output_visibility": self.output_visibility,
                "calibration_max_abs_error": self.calibration_max_abs_error,
                "pk_bytes": self.pk_path.stat().st_size, "vk_bytes": self.vk_path.stat().st_size, "batch": self.batch}

    @classmethod
    def load(cls, d: Path, srs_path: Path) -> ZkSetup:
        meta = json.loads((d / "setup.json").read_text())
        srs = SrsInfo(meta["srs"]["kind"], int(meta["srs"]["logrows"]), srs_path, meta["srs"]["sha256"])
        return cls(d, int(meta["logrows"]), int(meta["num_rows"]), meta["settings_hash"], meta["vk_hash"], srs,
                   meta["input_visibility"], meta["output_visibility"], float(meta["calibration_max_abs_error"]),
                   int(meta.get("batch", 1)))


def _input_json(inputs: list[np.ndarray]) -> dict[str, Any]:
    return {"input_data": [np.asarray(a, dtype=np.float64).reshape(-1).tolist() for a in inputs]}


CALIBRATION_SAMPLES = 32


def calibration_batch(inputs: list[np.ndarray], samples: int = CALIBRATION_SAMPLES) -> list[np.ndarray]:
    """Calibration data around a sample input: the input itself plus ``samples`` draws that spread to 2x
    its scale (EZKL sizes its lookup tables from what calibration sees; an input outside that range made
    EZKL 23.0.5 hang while proving, so the range is made generous)."""
    rng = np.random.default_rng(0)
    out = []
    for a in inputs:
        a = np.asarray(a)
        if a.dtype.kind != "f":
            out.append(np.concatenate([a] * (samples + 1)))
            continue
        scale = max(float(np.abs(a).max()), 1.0)
        extra = rng.uniform(-2 * scale, 2 * scale, size=(samples, *a.shape)).astype(a.dtype)
        out.append(np.concatenate([a[None], extra]).reshape(-1))
    return out


def _symbolic_dims(model_bytes: bytes, batch: int = 1) -> list[tuple[str, int]]:
    """EZKL's ``variables``: every symbolic dim at 1, except the batch dim at ``batch`` (a circuit over that many
    rows; only for a model ``ciro.zk_batch.batch_dim`` accepts)."""
    import onnx

    from .zk_batch import _dim_names, batch_dim

    names = list(dict.fromkeys(n for n, _ in _dim_names(onnx.load_from_string(model_bytes))))
    lead = batch_dim(model_bytes) if batch != 1 else None
    if batch != 1 and lead is None:
        raise InputError("This model has no single symbolic batch dimension: it can be proven one row at a time only.")
    return [(n, batch if n == lead else 1) for n in names]


#: The largest circuit (rows, as EZKL counts them before calibration) Ciro sets up. Set-up and proving time and
#: memory grow with 2^logrows: measured here (2 cores) 2^15-2^16 rows prove in 10-25 s, 2^18 in minutes with
#: GBs of keys; at 2^19 rows (logrows 20) a proof takes many minutes on a provider's few cores.
MAX_ZK_ROWS = 2**19


def _nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:  # subgraphs (If, Loop, Scan)
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _nodes(sub)


def zk_precheck(model_bytes: bytes, *, input_visibility: str = "public", output_visibility: str = "public",
                count_rows: bool = True, batch: int = 1) -> int | None:
    """Refuse, before any set-up, a model EZKL cannot prove, saying why and what to do: operators outside the
    standard ONNX domain (scikit-learn's, XGBoost's and LightGBM's ``ai.onnx.ml`` operators, onnxruntime's
    fused ``com.microsoft`` ones), a graph EZKL cannot read, a circuit above :data:`MAX_ZK_ROWS` rows. Returns
    EZKL's row count of the circuit (``count_rows``: needs EZKL; without it only the operators are checked and
    None is returned). ``batch``: the circuit over that many rows (:mod:`ciro.zk_batch`)."""
    import onnx

    try:
        proto = onnx.load_from_string(model_bytes)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InvalidModelError(f"The model is not a readable ONNX file ({exc}). Export it to ONNX again.") from exc
    foreign = sorted({(n.domain, n.op_type) for n in _nodes(proto.graph) if n.domain not in ("", "ai.onnx")})
    ml = [op for domain, op in foreign if domain == "ai.onnx.ml"]
    if ml:
        raise InvalidModelError(
            f"The model uses ai.onnx.ml operator{'s' if len(ml) > 1 else ''} {', '.join(ml)}, which EZKL cannot "
            "prove: deploy the original model with deploy_model(framework='sklearn' (or 'xgboost', 'lightgbm'), "
            "verification='zk') (MLflow: -C verify=zk) to convert it to plain tensor operators; as it is, it can serve "
            "receipt and quorum jobs only.")
    if foreign:
        ops = ", ".join(f"{domain}.{op}" for domain, op in foreign)
        raise InvalidModelError(
            f"The model uses operators outside the ONNX standard ({ops}), which EZKL cannot prove (onnxruntime's "
            "fused operators come from optimization='all' or from exporting an optimised graph): deploy it without "
            "that optimisation, with standard ONNX operators; as it is, it can serve receipt and quorum jobs only.")
    if not count_rows:
        return None
    for v in (input_visibility, output_visibility):
        if v not in VISIBILITIES:
            raise InputError(f"Visibility {v!r} is not supported; use one of {', '.join(VISIBILITIES)}.")
    ezkl = _ezkl()
    with tempfile.TemporaryDirectory(prefix="ciro-precheck-") as tmp:
        model, settings = Path(tmp) / "model.onnx", Path(tmp) / "settings.json"
        model.write_bytes(model_bytes)
        ra = ezkl.PyRunArgs()
        ra.input_visibility, ra.output_visibility = VISIBILITIES[input_visibility], VISIBILITIES[output_visibility]
        ra.param_visibility = "fixed"
        ra.variables = _symbolic_dims(model_bytes, batch)
        try:
            with _quiet():
                ezkl.gen_settings(str(model), str(settings), py_run_args=ra)
        except RuntimeError as exc:
            raise InvalidModelError(
                f"EZKL cannot build a circuit for this model: {str(exc).splitlines()[0][:300]}. It still serves "
                "receipt and quorum jobs.") from exc
        rows = int(json.loads(settings.read_text()).get("num_rows", 0))
    if rows > MAX_ZK_ROWS:
        raise InvalidModelError(
            f"The model's circuit would have {rows:,} rows (EZKL's count), more than the {MAX_ZK_ROWS:,} (2^19) Ciro "
            "sets up: the set-up and every proof would take too long and too much memory. Make the model smaller "
            "(fewer or narrower layers; for trees fewer or shallower ones); as it is, it can serve receipt and quorum "
            "jobs only.",
            detail={"num_rows": rows, "max_rows": MAX_ZK_ROWS})
    return rows


def zk_setup(model_bytes: bytes, out_dir: Path, *, calibration: list[np.ndarray], srs_dir: Path | None,
             home: Path, input_visibility: str = "public", output_visibility: str = "public",
             batch: int = 1) -> ZkSetup:
    """Settings, calibration, circuit, SRS and keys for a model, cached in ``out_dir``. ``batch`` > 1: a circuit
    over that many rows (``calibration``, one row, is repeated to fill them; :mod:`ciro.zk_batch`)."""
    for v in (input_visibility, output_visibility):
        if v not in VISIBILITIES:
            raise InputError(f"Visibility {v!r} is not supported; use one of {', '.join(VISIBILITIES)}.")
    if (out_dir / "setup.json").is_file():
        meta = json.loads((out_dir / "setup.json").read_text())
        if (meta["input_visibility"], meta["output_visibility"], meta.get("batch", 1)) == (
                input_visibility, output_visibility, batch):
            srs = find_srs(int(meta["srs"]["logrows"]), srs_dir=srs_dir, home=home)
            return ZkSetup.load(out_dir, srs.path)
        # other settings: build a new set-up, then replace the old one (proofs already made stay verifiable:
        # each artifact carries its own vk and settings)
    zk_precheck(model_bytes, input_visibility=input_visibility, output_visibility=output_visibility, batch=batch)
    from .zk_batch import calibration_data

    data_rows = calibration_data(calibration, batch)
    if batch != 1:
        calibration = [np.concatenate([np.asarray(a)] * batch) for a in calibration]
    ezkl = _ezkl()
    work = Path(tempfile.mkdtemp(prefix=".zk-", dir=out_dir.parent))
    try:
        (work / "model.onnx").write_bytes(model_bytes)
        ra = ezkl.PyRunArgs()
        ra.input_visibility, ra.output_visibility = VISIBILITIES[input_visibility], VISIBILITIES[output_visibility]
        ra.param_visibility = "fixed"
        ra.variables = _symbolic_dims(model_bytes, batch)
        data = work / "calibration.json"
        data.write_text(json.dumps(_input_json(data_rows)))
        settings = work / "settings.json"
        try:
            with _quiet():
                ezkl.gen_settings(str(work / "model.onnx"), str(settings), py_run_args=ra)
                ezkl.calibrate_settings(str(data), str(work / "model.onnx"), str(settings), "resources")
                ezkl.compile_circuit(str(work / "model.onnx"), str(work / "model.compiled"), str(settings))
        except RuntimeError as exc:
            raise InvalidModelError(
                f"EZKL cannot build a circuit for this model: {str(exc).splitlines()[0][:300]}. It still serves "
                "receipt and quorum jobs.") from exc
        s = json.loads(settings.read_text())
        logrows = int(s["run_args"]["logrows"])
        srs = find_srs(logrows, srs_dir=srs_dir, home=home)
        with _quiet():
            ezkl.setup(str(work / "model.compiled"), str(work / "vk.key"), str(work / "pk.key"), str(srs.path))
        (work / "sample.json").write_text(json.dumps(_input_json(calibration)))
        with _quiet():
            ezkl.gen_witness(str(work / "sample.json"), str(work / "model.compiled"), str(work / "witness.json"))
        error = _calibration_error(work, model_bytes, calibration, s)
        meta = {"logrows": logrows, "num_rows": int(s.get("num_rows", 0)), "settings_hash": sha256_file(settings),
                "vk_hash": sha256_file(work / "vk.key"), "srs": srs.to_dict(), "input_visibility": input_visibility,
                "output_visibility": output_visibility, "calibration_max_abs_error": error,
                "ezkl_version": getattr(ezkl, "__version__", "?"), "batch": batch}
        (work / "setup.json").write_text(json.dumps(meta, indent=1))
        for tmp in ("model.onnx", "calibration.json", "sample.json", "witness.json"):
            (work / tmp).unlink(missing_ok=True)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        old = out_dir.with_name(f".{out_dir.name}-old-{os.getpid()}")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(work, out_dir)
        if old.exists():
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    finally:
        if work.exists():
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return ZkSetup.load(out_dir, srs.path)


def _calibration_error(work: Path, model_bytes: bytes, calibration: list[np.ndarray], s: dict[str, Any]) -> float:
    """Max |EZKL fixed-point output - onnxruntime output| on the calibration input."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), calibration, strict=True)}
    want = [np.asarray(o, dtype=np.float64).reshape(-1) for o in sess.run(None, feeds)]
    witness = json.loads((work / "witness.json").read_text())
    got = _decode(witness["outputs"], s["model_output_scales"])
    return float(max(np.max(np.abs(g - w)) for g, w in zip(got, want, strict=True)))


def _decode(felts: list[list[str]], scales: list[int]) -> list[np.ndarray]:
    return _split(list(zip(felts, scales, strict=True)))


def zk_prove(setup: ZkSetup, inputs: list[np.ndarray], *, model_hash: str, input_commitment: str,
             output_commitment: str) -> dict[str, Any]:
    """Prove one job; returns the proof artifact (JSON-able, self-contained for offline checks)."""
    ezkl = _ezkl()
    with tempfile.TemporaryDirectory(prefix="ciro-prove-") as tmp:
        t = Path(tmp)
        (t / "input.json").write_text(json.dumps(_input_json(inputs)))
        with _quiet():
            ezkl.gen_witness(str(t / "input.json"), str(setup.compiled_path), str(t / "witness.json"))
            ezkl.prove(str(t / "witness.json"), str(setup.compiled_path), str(setup.pk_path), str(t / "proof.json"),
                       str(setup.srs.path))
        proof = json.loads((t / "proof.json").read_text())
        witness_outputs = json.loads((t / "witness.json").read_text())["outputs"]
    proof = {k: proof[k] for k in ("protocol", "instances", "proof", "split", "version", "timestamp") if k in proof}
    artifact = {
        "scheme": "ezkl-halo2-kzg", "model_hash": model_hash, "input_commitment": input_commitment,
        "output_commitment": output_commitment, "settings": json.loads(setup.settings_path.read_text()),
        "settings_hash": setup.settings_hash, "vk_hash": setup.vk_hash,
        "vk_b64": base64.b64encode(setup.vk_path.read_bytes()).decode(), "srs": setup.srs.to_dict(),
        "calibration_max_abs_error": setup.calibration_max_abs_error, "proof": proof,
        "proof_hash": hashlib.sha256(bytes(proof["proof"])).hexdigest(),
    }
    if setup.output_visibility == "hashed":  # the preimages of the output hashes, to bind them to the outputs
        artifact["output_felts"] = witness_outputs
    if setup.srs.kind == "development":
        artifact["warning"] = DEV_SRS_WARNING
    return artifact


def _split(groups: list[tuple[list[str], int]]) -> list[np.ndarray]:
    ezkl = _ezkl()
    return [np.array([ezkl.felt_to_float(f, sc) for f in fs]) for fs, sc in groups]
