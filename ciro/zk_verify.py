"""The verifier's side of EZKL proofs: ``zk_check`` verifies a proof artifact offline and binds its public
instances to a result's outputs (and inputs, when given), against a vk the verifier chose: ``build_vk``
rebuilds it from the model, once ``settings_problem`` found that the proof's settings are what EZKL derives
from that model. ``output_gap``/``output_tolerance`` compare proven outputs with claimed ones (the prover uses
them too, to catch a worker whose outputs the proof contradicts).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .zk import _ezkl, _quiet, _split, sha256_file
from .zk_batch import batch_problem, row_instance

__all__ = ["build_vk", "output_gap", "output_tolerance", "settings_problem", "zk_check"]

#: EZKL's JSON for the run_args visibilities a verifier accepts, and PyRunArgs' name for each.
_BINDING_VISIBILITY = {json.dumps("Public"): "public",
                       json.dumps({"Hashed": {"hash_is_public": True, "outlets": []}}, sort_keys=True): "hashed/public"}


def settings_problem(model_bytes: bytes, settings: Mapping[str, Any]) -> str | None:
    """Why a proof's ``settings`` cannot be trusted for this model, or None. EZKL must derive the same
    settings from the model and their own run_args (the scales and shapes that decode the public values
    are not bound by the vk); weights must be ``fixed`` (so the vk binds them) and inputs and outputs
    public or publicly hashed (so the proof binds them)."""
    ezkl = _ezkl()
    run_args = settings.get("run_args")
    if not isinstance(run_args, dict):
        return "they have no run_args"
    if run_args.get("param_visibility") != "Fixed":
        return f"param_visibility is {run_args.get('param_visibility')!r}, not 'Fixed': the vk would not bind the " \
               "weights"
    ra = ezkl.PyRunArgs()
    for key, value in run_args.items():
        if key in ("input_visibility", "output_visibility"):
            value = _BINDING_VISIBILITY.get(json.dumps(value, sort_keys=True))
            if value is None:
                return f"{key} is {run_args[key]!r}: only public or hashed/public values bind the proof to the job"
        elif key == "ignore_range_check_inputs_outputs" and value is not False:
            return "they switch off the range checks on inputs and outputs"
        elif key == "rebase_scale" and value is None:
            continue  # not settable from Python; None is EZKL's default
        try:
            if key in ("lookup_range", "variables") and isinstance(value, list):  # JSON lists, tuples to pyo3
                value = tuple(value) if key == "lookup_range" else [tuple(v) for v in value]
            setattr(ra, key, value)
        except (AttributeError, TypeError, ValueError, OverflowError) as exc:
            return f"run_args.{key} = {run_args[key]!r} is not accepted by EZKL ({exc})"
    with tempfile.TemporaryDirectory(prefix="ciro-settings-") as tmp:
        (Path(tmp) / "model.onnx").write_bytes(model_bytes)
        try:
            with _quiet():
                ezkl.gen_settings(str(Path(tmp) / "model.onnx"), str(Path(tmp) / "s.json"), py_run_args=ra)
        except RuntimeError as exc:
            return f"EZKL cannot derive settings from this model with them ({str(exc).splitlines()[0][:160]})"
        derived = json.loads((Path(tmp) / "s.json").read_text())
    differ = sorted(k for k in set(derived) | set(settings) if k != "timestamp" and _canon(k, derived.get(k))
                    != _canon(k, settings.get(k)))
    if differ:
        return f"{', '.join(differ)} differ from what EZKL {derived.get('version', '?')} derives from this model"
    return None


def _canon(key: str, value: Any) -> Any:
    # EZKL fills these from hash sets: their order differs from run to run
    if key in ("required_lookups", "required_range_checks") and isinstance(value, list):
        return sorted(value, key=json.dumps)
    return value


def build_vk(model_bytes: bytes, settings: Mapping[str, Any], srs_path: Path) -> bytes:
    """The verifying key of the circuit EZKL compiles from the model and settings, with this SRS (the same
    bytes the set-up made, when all three are the same). Raises RuntimeError when EZKL cannot build it."""
    ezkl = _ezkl()
    with tempfile.TemporaryDirectory(prefix="ciro-vk-") as tmp:
        t = Path(tmp)
        (t / "model.onnx").write_bytes(model_bytes)
        (t / "settings.json").write_text(json.dumps(dict(settings)))
        with _quiet():
            ezkl.compile_circuit(str(t / "model.onnx"), str(t / "m.compiled"), str(t / "settings.json"))
            ezkl.setup(str(t / "m.compiled"), str(t / "vk.key"), str(t / "pk.key"), str(srs_path))
        return (t / "vk.key").read_bytes()


def output_tolerance(artifact: Mapping[str, Any]) -> float:
    """How far a proven (fixed-point) output may be from the float output: 10x the error measured at
    set-up, and never below 4 units of the smallest output scale."""
    scales = artifact["settings"].get("model_output_scales") or [0]
    return max(10 * float(artifact.get("calibration_max_abs_error", 0.0)), 4 * 2.0 ** -min(scales))


def zk_check(artifact: Mapping[str, Any], *, outputs: list[np.ndarray], inputs: list[np.ndarray] | None,
             srs_path: Path, vk: bytes | None = None) -> list[tuple[str, bool, str]]:
    """Checks of a proof artifact: (name, ok, detail) each. The proof is verified against ``vk`` when given
    (a key the verifier chose), else against the vk the artifact ships (which binds nothing the prover did
    not choose: ``ciro.verify`` passes its own)."""
    ezkl = _ezkl()
    checks: list[tuple[str, bool, str]] = []
    settings = dict(artifact["settings"])
    if vk is None:
        vk = base64.b64decode(artifact["vk_b64"], validate=True)
        checks.append(("zk vk hash", hashlib.sha256(vk).hexdigest() == artifact["vk_hash"],
                       "the shipped vk matches vk_hash"))
    srs_ok = sha256_file(srs_path) == artifact["srs"]["sha256"]
    checks.append(("zk srs", srs_ok, f"SRS {srs_path.name} has the hash the proof was made with" if srs_ok
                   else f"{srs_path} does not have the SRS hash the proof was made with"))
    with tempfile.TemporaryDirectory(prefix="ciro-verify-") as tmp:
        t = Path(tmp)
        (t / "settings.json").write_text(json.dumps(settings))
        (t / "vk.key").write_bytes(vk)
        (t / "proof.json").write_text(json.dumps(artifact["proof"]))
        try:
            with _quiet():
                ok = bool(ezkl.verify(str(t / "proof.json"), str(t / "settings.json"), str(t / "vk.key"),
                                      str(srs_path)))
            detail = "Halo2/KZG proof verifies against the vk" if ok else "the proof does not verify"
        except RuntimeError as exc:  # EZKL raises rather than returning False on a bad proof
            ok, detail = False, f"the proof does not verify ({str(exc).splitlines()[0][:160]})"
        checks.append(("zk proof", ok, detail))
    if "batch" in artifact:
        b = artifact["batch"]
        problem = batch_problem(artifact) or ("a batch proof's inputs and outputs must be public value by value"
                                              if _hashed(settings, "input_visibility")
                                              or _hashed(settings, "output_visibility") else None)
        checks.append(("zk batch row", problem is None, f"this job is row {b['row']} of a proof over "
                       f"{b['size']} rows ({b['rows']} jobs); its inputs and outputs are read at that row"
                       if problem is None else f"the artifact's batch entry is wrong: {problem}"))
        if problem is not None:
            return checks
    flat, n_in = _instance(artifact, inputs)
    in_scales, out_scales = settings.get("model_input_scales", []), settings.get("model_output_scales", [])
    in_hashed = _hashed(settings, "input_visibility")
    if _hashed(settings, "output_visibility"):
        out_felts = [list(map(str, f)) for f in artifact.get("output_felts") or []]
        hashes_ok = len(out_felts) == len(out_scales) and all(
            _poseidon(f) == h for f, h in zip(out_felts, flat[n_in:], strict=False))
        checks.append(("zk output hashes", hashes_ok, "the shipped output values hash to the proof's public output "
                       "hashes" if hashes_ok else "the shipped output values do not hash to the proof's output "
                       "hashes"))
    tol = output_tolerance(artifact)
    worst = output_gap(artifact, outputs=outputs, inputs=inputs)
    at = f" (row {artifact['batch']['row']} of the batch proof)" if "batch" in artifact else ""
    checks.append(("zk outputs", worst <= tol, f"proven outputs{at} within {worst:.2g} of the result's (tolerance "
                   f"{tol:.2g})" if worst <= tol else f"proven outputs{at} differ from the result's by {worst:.3g} "
                   f"(tolerance {tol:.2g}): the proof does not prove this result"))
    if inputs is not None and in_hashed:
        ezkl = _ezkl()
        same = len(inputs) == len(in_scales) and all(
            _poseidon([ezkl.float_to_felt(float(v), sc) for v in np.asarray(a, dtype=np.float64).reshape(-1)]) == h
            for a, sc, h in zip(inputs, in_scales, flat[:n_in], strict=False))
        checks.append(("zk inputs", same, "the given inputs, quantised, hash to the proof's public input hashes"
                       if same else "the given inputs do not hash to the proof's public input hashes"))
    elif inputs is not None:
        proven_in = _split(_decode_flat(flat[:n_in], in_scales, [int(np.asarray(a).size) for a in inputs]))
        step = 2.0 ** -min(in_scales or [0])
        worst_in = max((float(np.max(np.abs(p - np.asarray(a, dtype=np.float64).reshape(-1))))
                        if p.size == np.size(a) else math.inf for p, a in zip(proven_in, inputs, strict=False)),
                       default=math.inf)
        checks.append(("zk inputs", worst_in <= step,
                       f"the proof's public inputs{at} are the given inputs, quantised" if worst_in <= step
                       else f"the proof's public inputs{at} differ from the given ones by {worst_in:.3g}"))
    return checks


def _instance(artifact: Mapping[str, Any], inputs: list[np.ndarray] | None) -> tuple[list[str], int]:
    """The proof's public instance (flat) and how many of its leading elements belong to the inputs; for a batch
    proof, only the artifact's row of it (``ciro.zk_batch``)."""
    settings = artifact["settings"]
    flat = list((artifact["proof"].get("instances") or [[]])[0])
    if "batch" in artifact:
        if batch_problem(artifact) is not None or _hashed(settings, "input_visibility") or _hashed(
                settings, "output_visibility"):
            return [], 0  # decodes to nothing: zk_check reports why
        return row_instance(settings, flat, int(artifact["batch"]["row"]), len(settings.get("model_input_scales", [])))
    if _hashed(settings, "input_visibility"):
        return flat, len(settings.get("model_input_scales", []))
    if inputs is not None:
        return flat, sum(int(np.asarray(a).size) for a in inputs)
    return flat, _count(settings, "input")


def output_gap(artifact: Mapping[str, Any], *, outputs: list[np.ndarray], inputs: list[np.ndarray] | None) -> float:
    """The largest absolute difference between the outputs the proof proves (decoded from its public instance,
    or from the shipped preimages for hashed outputs) and ``outputs``; infinite when their sizes differ."""
    flat, n_in = _instance(artifact, inputs)
    out_scales = artifact["settings"].get("model_output_scales", [])
    if _hashed(artifact["settings"], "output_visibility"):
        felts = [list(map(str, f)) for f in artifact.get("output_felts") or []]
        proven = _split(list(zip(felts, out_scales, strict=False)))
    else:
        proven = _split(_decode_flat(flat[n_in:], out_scales, [int(np.asarray(o).size) for o in outputs]))
    if len(proven) != len(outputs):
        return math.inf
    return max((float(np.max(np.abs(p - np.asarray(o, dtype=np.float64).reshape(-1)), initial=0.0))
                if p.size == np.size(o) else math.inf for p, o in zip(proven, outputs, strict=True)), default=math.inf)


def _hashed(settings: Mapping[str, Any], key: str) -> bool:
    v = settings.get("run_args", {}).get(key)
    return isinstance(v, dict) and "Hashed" in v


def _poseidon(felts: list[str]) -> str:
    """EZKL's Poseidon hash of a tensor's field elements (what a hashed/public instance holds)."""
    out = _ezkl().poseidon_hash(felts)
    return str(out[0])


def _count(settings: Mapping[str, Any], kind: str) -> int:
    shapes = settings.get("model_instance_shapes") or []
    n_inputs = len(settings.get("model_input_scales", []))
    sel = shapes[:n_inputs] if kind == "input" else shapes[n_inputs:]
    return sum(math.prod(s) for s in sel)


def _decode_flat(felts: list[str], scales: list[int], sizes: list[int]) -> list[tuple[list[str], int]]:
    out, pos = [], 0
    for size, scale in zip(sizes, scales or [0] * len(sizes), strict=False):
        out.append((felts[pos:pos + size], scale))
        pos += size
    return out
