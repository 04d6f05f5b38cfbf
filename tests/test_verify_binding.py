"""`ciro verify` binds a zk result to keys the verifier chose, never to keys the prover shipped.

One real EZKL set-up per model and one real proof (module fixture, no cluster); the attacks edit that
artifact: a proof for model B relabelled as model A, a relabelled SRS, settings that do not follow from
the model, and malformed fields, each of which must end as a named failed check.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CIRO
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ciro import Config, Identity, JobResult, JobStatus, VerificationLevel, commitment, sign_receipt, verify
from ciro.demo import build_tiny_mlp


@dataclass
class Proven:
    home: Path
    a: Path  # model A: same architecture as B, other weights
    b: Path
    x: np.ndarray
    honest: dict[str, Any]  # B's zk result, as `ciro infer --out` writes it
    vk_a: Path
    vk_b: Path

    @property
    def config(self) -> Config:
        return Config(home=self.home)


def _result(model: bytes, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], art: dict[str, Any],
            signer: Identity) -> dict[str, Any]:
    mh = hashlib.sha256(model).hexdigest()
    ic, oc = commitment(inputs), commitment(outputs)
    art = {**art, "model_hash": mh, "input_commitment": ic, "output_commitment": oc}
    rc = sign_receipt(signer, job_id="7e" * 16, model_hash=mh, input_commitment=ic, output_commitment=oc,
                      level="zk")
    return JobResult(job_id="7e" * 16, model_hash=mh, status=JobStatus.DONE, input_commitment=ic,
                     output_commitment=oc, outputs=outputs, verification=VerificationLevel.ZKML, receipt=rc,
                     zk=art).to_dict()


@pytest.fixture(scope="module")
def proven(tmp_path_factory: pytest.TempPathFactory) -> Proven:
    import onnxruntime as ort

    from ciro.zk import zk_prove, zk_setup

    tmp = tmp_path_factory.mktemp("binding")
    home = tmp / "home"
    a = build_tiny_mlp(tmp / "a.onnx", in_dim=4, hidden=4, out_dim=2, seed=1)
    b = build_tiny_mlp(tmp / "b.onnx", in_dim=4, hidden=4, out_dim=2, seed=2)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    setup_a = zk_setup(a.read_bytes(), tmp / "zk-a", calibration=[x], srs_dir=None, home=home)
    setup_b = zk_setup(b.read_bytes(), tmp / "zk-b", calibration=[x], srs_dir=None, home=home)
    y = ort.InferenceSession(str(b), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    art = zk_prove(setup_b, [x], model_hash="", input_commitment="", output_commitment="")
    honest = _result(b.read_bytes(), {"x": x}, {"y": y}, art, Identity.generate("worker"))
    return Proven(home, a, b, x, honest, setup_a.vk_path, setup_b.vk_path)


def _forged(p: Proven) -> dict[str, Any]:
    """B's genuine proof relabelled as model A, its receipt re-signed with a freshly made key."""
    d = json.loads(json.dumps(p.honest))
    outputs = {"y": np.asarray(d["outputs"]["y"]["data"], np.float32).reshape(d["outputs"]["y"]["shape"])}
    return _result(p.a.read_bytes(), {"x": p.x}, outputs, d["zk"], Identity.generate("mallory"))


def test_a_proof_for_another_model_relabelled_is_invalid(proven: Proven) -> None:
    report = verify(_forged(proven), inputs={"x": proven.x}, model=proven.a, config=proven.config)
    assert not report.valid, report.text()
    assert {c.name for c in report.checks if c.ok} >= {"model hash", "receipt signature", "zk artifact"}
    assert {"zk verifying key", "zk proof"} <= {c.name for c in report.failures}
    honest = verify(proven.honest, inputs={"x": proven.x}, model=proven.b, config=proven.config)
    assert honest.valid, honest.text()
    assert any("not checked against any key you trust" in n for n in honest.notes)  # the receipt's signer


def test_the_vk_is_rebuilt_once_then_read_from_the_cache(proven: Proven, tmp_path: Path) -> None:
    cfg = Config(home=tmp_path)  # an empty home: nothing cached yet
    srs = next((proven.home / "srs").glob("dev-kzg*.srs"))
    times, details = [], []
    for _ in range(2):
        start = time.perf_counter()
        report = verify(proven.honest, model=proven.b, srs=srs, config=cfg)
        times.append(time.perf_counter() - start)
        assert report.valid, report.text()
        details.append(next(c.detail for c in report.checks if c.name == "zk verifying key"))
    print(f"verify with a vk rebuild: {times[0]:.2f} s; with the cached vk: {times[1]:.2f} s")
    assert "rebuilt from the given model + settings + SRS in" in details[0] and "cached in" in details[1]
    [cached] = (tmp_path / "vk-cache" / hashlib.sha256(proven.b.read_bytes()).hexdigest()).glob("*/vk.key")
    assert cached.read_bytes() == proven.vk_b.read_bytes()  # EZKL rebuilds the set-up's vk byte for byte
    assert cached.parent.name.endswith("-" + hashlib.sha256(srs.read_bytes()).hexdigest()[:16])


def test_a_zk_result_is_valid_only_against_a_key_the_verifier_chose(proven: Proven) -> None:
    def failing(**kw: Any) -> set[str]:
        return {c.name for c in verify(proven.honest, inputs={"x": proven.x}, config=proven.config, **kw).failures}

    assert failing() == {"zk verifying key"}  # only the vk the prover shipped
    assert failing(vk=proven.vk_b) == {"zk settings"}  # a trusted vk, but the settings are unchecked
    report = verify(proven.honest, model=proven.b, vk=proven.vk_b, config=proven.config)
    assert report.valid and "the vk you gave" in report.text(), report.text()
    assert failing(model=proven.b, vk=proven.vk_a) >= {"zk verifying key", "zk proof"}  # model A's key
    assert failing(model=proven.b, vk=proven.vk_b.read_bytes()) == set()


@pytest.mark.parametrize(("key", "value"), [
    ("model_output_scales", [12]),  # decodes the proven outputs at twice their value; the vk does not bind it
    ("run_args.param_visibility", "Private"),  # the weights would be a witness, not bound by the vk
    ("run_args.output_visibility", "Private"),
    ("run_args.input_visibility", {"Hashed": {"hash_is_public": False, "outlets": []}}),
    ("run_args.ignore_range_check_inputs_outputs", True),
    ("run_args.variables", [[1]]),
    ("run_args", None),
])
def test_settings_that_do_not_follow_from_the_model_fail(proven: Proven, key: str, value: object) -> None:
    d = json.loads(json.dumps(proven.honest))
    _set(d["zk"]["settings"], key, value)
    report = verify(d, model=proven.b, config=proven.config)
    assert {c.name for c in report.failures} == {"zk settings"}, report.text()


def _set(d: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for k in parents:
        d = d[k]
    d[last] = value


def test_the_srs_is_pinned_only_by_the_verifiers_own_sums(proven: Proven, tmp_path: Path) -> None:
    d = json.loads(json.dumps(proven.honest))
    d["zk"]["srs"]["kind"] = "pinned"  # the prover's label
    d["zk"].pop("warning", None)
    report = verify(d, model=proven.b, config=proven.config)
    assert report.valid and any("DEVELOPMENT SRS" in n for n in report.notes), report.text()
    srs = next((proven.home / "srs").glob("dev-kzg*.srs"))
    pins = tmp_path / "pins"
    pins.mkdir()
    (pins / "SHA256SUMS").write_text(f"{'ab' * 32}  {srs.name}\n")  # pins another file
    cfg = Config(home=proven.home, srs_dir=str(pins))
    assert any("DEVELOPMENT SRS" in n for n in verify(d, model=proven.b, config=cfg).notes)
    (pins / "SHA256SUMS").write_text(f"{hashlib.sha256(srs.read_bytes()).hexdigest()}  {srs.name}\n")
    report = verify(proven.honest, model=proven.b, config=cfg)  # pinned by the verifier, whatever the label
    assert report.valid and not any("SRS" in n for n in report.notes), report.text()


MALFORMED: list[tuple[str, object]] = [
    ("proof.proof", "zz"), ("proof.instances", [["xyz"]]), ("proof.instances", [["0x12", "0x34"]]),
    ("proof.instances", 7), ("proof", None), ("vk_b64", "not base64!"), ("srs", "kzg"), ("srs.sha256", 12),
    ("settings", {}), ("settings.run_args.logrows", 3), ("settings.run_args.logrows", "x"),
    ("settings.model_output_scales", None), ("settings.run_args.variables", "batch"),
]


@pytest.mark.parametrize(("key", "value"), MALFORMED)
def test_malformed_artifacts_are_named_failed_checks(proven: Proven, capfd: pytest.CaptureFixture[str],
                                                     key: str, value: object) -> None:
    d = json.loads(json.dumps(proven.honest))
    if key == "proof.proof":
        d["zk"]["proof"]["proof"] = d["zk"]["proof"]["proof"][:50]
        assert not verify(d, model=proven.b, config=proven.config).valid  # truncated
    _set(d["zk"], key, value)
    report = verify(d, model=proven.b, inputs={"x": proven.x}, config=proven.config)
    assert not report.valid and any(c.name.startswith("zk ") for c in report.failures), report.text()
    err = capfd.readouterr().err
    assert "panicked" not in err and "Traceback" not in err  # EZKL's Rust panics stay quiet


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=12), lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6)
FUZZED = ["proof", "proof.proof", "proof.instances", "vk_b64", "srs", "srs.sha256", "settings", "settings.run_args",
          "settings.model_output_scales", "settings.model_instance_shapes", "settings.run_args.input_scale",
          "settings.run_args.logrows", "settings.run_args.input_visibility"]


@given(key=st.sampled_from(FUZZED), value=json_values)
@settings(max_examples=40, deadline=None)
def test_fuzzed_artifact_fields_never_crash_or_pass(proven: Proven, key: str, value: object) -> None:
    d = json.loads(json.dumps(proven.honest))
    parent, last = d["zk"], key
    if "." in key:
        head, last = key.rsplit(".", 1)
        parent = d["zk"]
        for k in head.split("."):
            parent = parent[k]
    assume(parent.get(last) != value)
    parent[last] = value
    report = verify(d, model=proven.b, config=proven.config)
    assert not report.valid, report.text()


def test_cli_binds_the_model_and_has_no_rebuild_flag(proven: Proven, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CIRO_SRS_DIR"} | {"CIRO_HOME": str(proven.home)}
    (tmp_path / "forged.json").write_text(json.dumps(_forged(proven)))
    (tmp_path / "r.json").write_text(json.dumps(proven.honest))
    np.savez(tmp_path / "x.npz", x=proven.x)

    def ciro(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CIRO, "verify", *map(str, args)], env=env, capture_output=True, text=True,
                              timeout=300)

    forged = ciro(tmp_path / "forged.json", "--model", proven.a, "-i", tmp_path / "x.npz")
    assert forged.returncode == 1 and "[FAIL] zk proof" in forged.stdout and "INVALID" in forged.stdout
    ok = ciro(tmp_path / "r.json", "--model", proven.b, "-i", tmp_path / "x.npz")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "[ok] zk verifying key" in ok.stdout and "NOTE: SRS" in ok.stdout and "--worker-key" in ok.stdout
    assert ciro(tmp_path / "r.json", "--model", proven.b, "--vk", proven.vk_b).returncode == 0
    shipped_only = ciro(tmp_path / "r.json")
    assert shipped_only.returncode == 1 and "[FAIL] zk verifying key: the proof was checked only" in shipped_only.stdout
    usage = ciro(tmp_path / "r.json", "--vk", proven.vk_b)
    assert usage.returncode == 2 and "--vk needs --model" in usage.stderr
    assert "No such option '--rebuild-vk'" in ciro(tmp_path / "r.json", "--rebuild-vk").stderr


def test_a_stretched_tolerance_cannot_cover_changed_outputs(proven: Proven) -> None:
    """The zk output check trusts the prover's calibration error for its tolerance: a forger inflates it and
    shifts the outputs. With the model and the inputs, the verifier recomputes the outputs itself."""
    d = json.loads(json.dumps(proven.honest))
    y = np.asarray(d["outputs"]["y"]["data"], np.float32).reshape(d["outputs"]["y"]["shape"]) + 0.5
    art = {**d["zk"]}
    for key in [k for k in art if "calibration" in k or "tolerance" in k]:
        art[key] = 1e6
    forged = _result(proven.b.read_bytes(), {"x": proven.x}, {"y": y}, art, Identity.generate("mallory"))
    report = verify(forged, inputs={"x": proven.x}, model=proven.b, config=proven.config)
    assert not report.valid and "recomputed outputs" in {c.name for c in report.failures}, report.text()
    honest = verify(proven.honest, inputs={"x": proven.x}, model=proven.b, config=proven.config)
    assert honest.valid and any(c.name == "recomputed outputs" and c.ok for c in honest.checks), honest.text()
