"""Offline verification of a job result: no network, no trust in the gateway.

``verify(result)`` recomputes what can be recomputed from the result itself (the output
commitment from the outputs) and checks the evidence its level carries (a receipt's fields and
Stark signature). Given the inputs, the model file or a list of trusted worker keys, it also
binds the result to them. Each check reports a reason when it fails.

What it trusts is the verifier's, never the prover's: a zk proof is verified against a verifying
key rebuilt from the given model (or one the verifier passes), with settings checked against that
model; an SRS counts as pinned only when the verifier's own SHA256SUMS lists it; a receipt's signer
only when it is among the keys passed. Anything else is a failed check or a note.

A result a gateway answered from its result cache (``cached``) carries the evidence of the job that computed it
(``cached_from``): its receipt and votes must name that job, and its commitments must be the result's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .errors import ConfigError, InputError
from .jobs import JobResult, VerificationLevel
from .modelstore import read_model_file
from .quorum import QuorumPolicy, agree
from .receipts import Receipt
from .tensors import commitment, decode_json

__all__ = ["Check", "VerificationReport", "verify"]



@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerificationReport:
    job_id: str
    level: VerificationLevel
    checks: list[Check] = field(default_factory=list)
    #: Caveats that do not fail the check but limit what it proves (e.g. a development SRS).
    notes: list[str] = field(default_factory=list)
    #: For a result reused from a gateway's cache: the job that computed it, which its evidence names.
    computed_for: str | None = None

    @property
    def valid(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def proves(self) -> str:
        return self.level.proves

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def text(self) -> str:
        lines = [f"job {self.job_id}: level {self.level.value}"
                 + (f" (the result of job {self.computed_for}, reused)" if self.computed_for else "")]
        lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        lines += [f"  NOTE: {n}" for n in self.notes]
        lines.append(f"{'VALID' if self.valid else 'INVALID'}" + (f": proves {self.proves}." if self.valid else
                     f": {len(self.failures)} check(s) failed."))
        return "\n".join(lines)


def _load(result: JobResult | Mapping[str, Any] | str | os.PathLike[str]) -> JobResult:
    if isinstance(result, JobResult):
        return result
    if isinstance(result, str | os.PathLike):
        try:
            data = json.loads(Path(result).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"Cannot read result file {result}: {exc}. Save one with `ciro infer --out r.json`.") \
                from exc
    else:
        data = dict(result)
    try:
        return JobResult.from_wire(data)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"Not a Ciro job result ({exc}). Save one with `ciro infer --out r.json` or "
                         "JobResult.to_dict().") from exc


def verify(result: JobResult | Mapping[str, Any] | str | os.PathLike[str], *,
           inputs: Mapping[str, np.ndarray] | None = None, model: str | os.PathLike[str] | bytes | None = None,
           trusted_workers: Iterable[str] | None = None, srs: str | os.PathLike[str] | None = None,
           vk: str | os.PathLike[str] | bytes | None = None, config: Config | None = None) -> VerificationReport:
    """Check a result offline. ``inputs``, ``model`` and ``trusted_workers`` bind it further when given.

    A zk result is valid only against a verifying key you chose: the one rebuilt from ``model`` + the
    proof's settings + the SRS (cached under ``$CIRO_HOME/vk-cache``), or ``vk``, a key file you trust
    (the settings are still checked against ``model``). It also needs the SRS the proof was made with
    (``srs``, else found by its hash in ``srs_dir`` or ``$CIRO_HOME/srs``), which counts as pinned only
    when ``srs_dir/SHA256SUMS`` lists it."""
    r = _load(result)
    vk_bytes = _read_vk(vk)
    model_bytes: bytes | None = None
    report = VerificationReport(r.job_id, r.verification)
    if r.outputs is None or r.output_commitment is None:
        report.add("outputs", False, f"the result has no outputs (status {r.status.value})")
        return report
    job_id = _reuse_check(report, r)
    oc = commitment(r.outputs)
    report.add("output commitment", oc == r.output_commitment,
               "matches the outputs" if oc == r.output_commitment else
               f"outputs hash to {oc[:16]}..., the result claims {r.output_commitment[:16]}...")
    if inputs is not None:
        ic = commitment(inputs)
        report.add("input commitment", ic == r.input_commitment,
                   "matches the given inputs" if ic == r.input_commitment else
                   f"the given inputs hash to {ic[:16]}..., the result claims {r.input_commitment[:16]}...")
    if model is not None:
        data = bytes(model) if isinstance(model, bytes | bytearray) else read_model_file(model, max_bytes=1 << 62)
        model_bytes = data
        mh = hashlib.sha256(data).hexdigest()
        report.add("model hash", mh == r.model_hash, "matches the given model" if mh == r.model_hash else
                   f"the given model hashes to {mh[:16]}..., the result claims {r.model_hash[:16]}...")
    if r.verification is VerificationLevel.RECEIPT:
        _check_receipt(report, r, trusted_workers, job_id)
    elif r.verification is VerificationLevel.QUORUM:
        _check_quorum(report, r, trusted_workers, job_id)
    elif r.verification is VerificationLevel.ZKML:
        _check_receipt(report, r, trusted_workers, job_id)
        _check_zk(report, r, inputs, srs, model_bytes, vk_bytes, config or Config.load())
        if model_bytes is not None and inputs is not None:
            _check_recomputed(report, r, model_bytes, inputs)
    elif r.verification is not VerificationLevel.NONE:
        report.add("evidence", False, f"level {r.verification.value!r} is not verifiable by this build")
    return report


def _reuse_check(report: VerificationReport, r: JobResult) -> str:
    """The job id the evidence must name: the result's own, or for a result reused from a gateway's result cache
    the job that computed it (``cached_from``), said in the report. A result that claims one without the other,
    or that it reuses itself, fails."""
    if not r.cached and r.cached_from is None:
        return r.job_id
    source = r.cached_from
    ok = r.cached and isinstance(source, str) and bool(source) and source != r.job_id
    report.add("reused result", ok, f"computed for job {source} and reused as job {r.job_id} from the gateway's "
               f"result cache: the evidence must name job {source}" if ok else
               f"cached={r.cached!r} but cached_from={source!r}: a reused result names the other job that computed "
               "it, and only a reused one does")
    if not ok:
        return r.job_id
    report.computed_for = source
    if not r.verification.signs_receipt:
        report.notes.append(f"a {r.verification.value!r} result carries no evidence naming the job that computed "
                            f"it: that it is job {source}'s result is the gateway's word")
    return str(source)


#: How closely the verifier's own onnxruntime run must reproduce a zk result's float outputs.
RECOMPUTE_RTOL, RECOMPUTE_ATOL = 1e-4, 1e-5


def _check_recomputed(report: VerificationReport, r: JobResult, model: bytes, inputs: Mapping[str, np.ndarray]
                      ) -> None:
    """A zk proof binds the fixed-point outputs only within a tolerance the prover's calibration states; with the
    model and the inputs in hand the verifier recomputes the float outputs itself, so that tolerance cannot be
    stretched to cover changed outputs."""
    import onnxruntime as ort

    assert r.outputs is not None
    try:
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, sess.run(None, {k: np.asarray(v) for k, v in inputs.items()}), strict=True))
    except Exception as exc:  # the inputs do not fit the model: say so as a failed check
        report.add("recomputed outputs", False, f"onnxruntime could not run the given model on the given inputs "
                   f"({str(exc).splitlines()[0][:160]})")
        return
    bad = sorted(n for n, v in r.outputs.items() if n not in got or np.asarray(got[n]).shape != v.shape
                 or not np.allclose(np.asarray(got[n], np.float64), v.astype(np.float64), rtol=RECOMPUTE_RTOL,
                                    atol=RECOMPUTE_ATOL, equal_nan=True))
    report.add("recomputed outputs", not bad, "onnxruntime here, on the given model and inputs, gives the result's "
               f"outputs (rtol {RECOMPUTE_RTOL:g}, atol {RECOMPUTE_ATOL:g})" if not bad else
               f"output(s) {', '.join(bad)} differ from what onnxruntime here computes from the given model and inputs")


def _check_receipt(report: VerificationReport, r: JobResult, trusted: Iterable[str] | None, job_id: str) -> None:
    rc = r.receipt
    if rc is None:
        report.add("receipt", False, "the result carries no receipt")
        return
    fields = {"job_id": job_id, "model_hash": r.model_hash, "input_commitment": r.input_commitment,
              "output_commitment": r.output_commitment, "level": r.verification.value}
    wrong = sorted(k for k, v in fields.items() if getattr(rc, k) != v)
    report.add("receipt fields", not wrong, "describe this result" if not wrong else
               f"receipt {', '.join(wrong)} differ from the result's"
               + (f" (a reused result's receipt names the job in cached_from, {job_id})"
                  if "job_id" in wrong and job_id != r.job_id else ""))
    problem = rc.problem()
    report.add("receipt signature", problem is None, problem or (
        f"valid Stark ECDSA signature by {rc.worker_key[:18]}..." + (
            f" over a batch of {rc.batch_size} job(s) whose root this job's leaf (index {rc.leaf_index}) and path "
            "reach" if rc.batched else "")))
    if trusted is not None:
        keys = {int(k, 16) for k in trusted}
        known = int(rc.worker_key, 16) in keys
        report.add("worker key", known, "is in the trusted list" if known else
                   f"{rc.worker_key[:18]}... is not among the {len(keys)} trusted worker key(s)")
    else:
        report.notes.append(f"the receipt's signer {rc.worker_key[:18]}... was not checked against any key you "
                            "trust (pass --worker-key KEY / trusted_workers=); any key can sign a receipt")


def _check_quorum(report: VerificationReport, r: JobResult, trusted: Iterable[str] | None, job_id: str) -> None:
    q = r.quorum
    if not isinstance(q, dict) or not isinstance(q.get("votes"), list):
        report.add("quorum evidence", False, "the result carries no quorum votes")
        return
    try:
        policy = QuorumPolicy.from_options(q)
    except InputError as exc:
        report.add("quorum policy", False, str(exc))
        return
    consistent = q.get("k") == policy.k and q.get("threshold") == policy.threshold
    report.add("quorum policy", consistent, f"f={policy.f}: k={policy.k}, {policy.threshold} must agree, "
               f"rtol={policy.rtol}, atol={policy.atol}" if consistent else
               f"k={q.get('k')} / threshold={q.get('threshold')} do not follow from f={policy.f}")
    assert r.outputs is not None
    expected = {"job_id": job_id, "model_hash": r.model_hash, "input_commitment": r.input_commitment,
                "level": VerificationLevel.QUORUM.value}
    agreeing: dict[int, str] = {}
    problems: list[str] = []
    for i, vote in enumerate(q["votes"]):
        try:
            rc = Receipt.from_dict(vote["receipt"])
            outputs = decode_json(vote["outputs"])
        except (InputError, KeyError, TypeError) as exc:
            problems.append(f"vote {i}: malformed ({exc})")
            continue
        wrong = sorted(k for k, v in expected.items() if getattr(rc, k) != v)
        if wrong:
            problems.append(f"vote {i}: receipt {', '.join(wrong)} differ from the result's")
        elif (why := rc.problem()) is not None:
            problems.append(f"vote {i}: {why}")
        elif commitment(outputs) != rc.output_commitment:
            problems.append(f"vote {i}: outputs do not hash to the receipt's output commitment")
        elif agree(outputs, r.outputs, policy):
            agreeing[int(rc.worker_key, 16)] = rc.output_commitment
    report.add("quorum votes", not problems, f"{len(q['votes'])} vote(s), every receipt valid" if not problems
               else "; ".join(problems))
    enough = len(agreeing) >= policy.threshold
    report.add("quorum agreement", enough,
               f"{len(agreeing)} distinct worker keys signed outputs that agree with the result"
               + ("" if enough else f"; {policy.threshold} are needed"))
    if r.output_commitment not in agreeing.values():
        report.add("quorum output", False, "no agreeing vote signed the result's output commitment")
    if trusted is not None:
        keys = {int(k, 16) for k in trusted}
        unknown = [k for k in agreeing if k not in keys]
        report.add("worker keys", not unknown, "every agreeing key is trusted" if not unknown else
                   f"{len(unknown)} agreeing key(s) are not in the trusted list")
    else:
        report.notes.append(f"the {len(agreeing)} agreeing worker key(s) were not checked against any key you trust "
                            "(pass --worker-key KEY, repeatable); anyone can make keys that agree")


def _check_zk(report: VerificationReport, r: JobResult, inputs: Mapping[str, np.ndarray] | None,
              srs: str | os.PathLike[str] | None, model: bytes | None, vk: bytes | None, cfg: Config) -> None:
    from .zk import _quiet

    art = r.zk
    if not isinstance(art, dict) or "proof" not in art:
        report.add("zk proof", False, "the result carries no proof artifact")
        return
    fields = {"model_hash": r.model_hash, "input_commitment": r.input_commitment,
              "output_commitment": r.output_commitment}
    wrong = sorted(k for k, v in fields.items() if art.get(k) != v)
    report.add("zk artifact", not wrong, "names this result's model and commitments" if not wrong else
               f"artifact {', '.join(wrong)} differ from the result's")
    try:
        with _quiet():  # EZKL's Rust code prints tables, and panics, to stdout/stderr
            _check_proof(report, r, art, inputs, srs, model, vk, cfg)
    except ConfigError:
        raise  # EZKL is not installed: the message says how to install it
    except BaseException as exc:
        # pyo3 turns a Rust panic into PanicException, a BaseException: a malformed artifact, not a crash
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        why = (str(exc).strip().splitlines() or [""])[0][:160]
        report.add("zk proof", False, f"malformed proof artifact ({type(exc).__name__}: {why}); ask for the result "
                   "file exactly as `ciro infer --out` wrote it")


def _check_proof(report: VerificationReport, r: JobResult, art: dict[str, Any],
                 inputs: Mapping[str, np.ndarray] | None, srs: str | os.PathLike[str] | None, model: bytes | None,
                 vk: bytes | None, cfg: Config) -> None:
    from .zk import sha256_file, srs_pinned
    from .zk_verify import settings_problem, zk_check

    meta = art["srs"]
    srs_path = Path(srs) if srs else _find_srs_by_hash(meta["sha256"], cfg, sha256_file)
    if srs_path is None:
        report.add("zk srs", False, f"SRS {meta.get('name')} (sha256 {str(meta['sha256'])[:16]}...) not found: "
                   "pass --srs PATH")
        return
    srs_sha = sha256_file(srs_path)
    if not srs_pinned(srs_sha, cfg.srs_dir):  # the verifier's own pins, not the artifact's "kind" label
        where = f"{cfg.srs_dir}/SHA256SUMS" if cfg.srs_dir else "no srs_dir (CIRO_SRS_DIR) is set"
        report.notes.append(f"SRS {srs_path.name} (sha256 {srs_sha[:16]}...) is not pinned by you ({where}), "
                            "so treat it as a DEVELOPMENT SRS: the proof is not sound against whoever generated it; "
                            "pin public-ceremony SRS files (CIRO_SRS_DIR with SHA256SUMS) for real assurance")
    settings = art["settings"]
    shipped = base64.b64decode(art["vk_b64"], validate=True)
    key, how = vk, f"the vk you gave (sha256 {hashlib.sha256(vk).hexdigest()[:16]}...)" if vk is not None else ""
    if model is not None:
        problem = settings_problem(model, settings)
        report.add("zk settings", problem is None, "EZKL derives the same settings from the given model; weights "
                   "fixed" if problem is None else f"the proof's settings do not fit the given model: {problem}")
        if problem is not None:
            return
        if key is None:
            key, how = _rebuilt_vk(model, settings, srs_path, srs_sha, cfg)
            if key is None:
                report.add("zk verifying key", False, how)
                return
    elif vk is None:
        report.add("zk verifying key", False, "the proof was checked only against the vk the prover shipped; pass "
                   "--model MODEL.onnx (the vk is rebuilt from it) or --vk FILE with it")
    else:
        report.add("zk settings", False, "the settings that decode the proof's public values come from the "
                   "prover: pass --model MODEL.onnx to check them against the model")
    if key is not None:
        report.add("zk verifying key", key == shipped, f"{how}; the proof shipped the same vk" if key == shipped
                   else f"{how} differs from the vk the proof shipped: the proof was not made for this model")
    assert r.outputs is not None
    names_in = sorted(inputs) if inputs is not None else None
    checks = zk_check(art, outputs=list(r.outputs.values()),
                      inputs=[inputs[n] for n in names_in] if inputs is not None and names_in else None,
                      srs_path=srs_path, vk=key)
    for name, ok, detail in checks:
        report.add(name, ok, detail)
    if inputs is None:
        report.notes.append("the proof's inputs were not compared with the job's inputs (pass them: -i / inputs=)")


def _rebuilt_vk(model: bytes, settings: Mapping[str, Any], srs_path: Path, srs_sha: str,
                cfg: Config) -> tuple[bytes | None, str]:
    """The vk EZKL builds from the model + settings + SRS, cached by the hashes of all three (computed
    here, never taken from the artifact); with the detail that says where it came from."""
    from .zk_verify import build_vk

    canon = json.dumps({k: v for k, v in settings.items() if k != "timestamp"}, sort_keys=True,
                       separators=(",", ":"))
    path = (cfg.paths.vk_cache / hashlib.sha256(model).hexdigest()
            / f"{hashlib.sha256(canon.encode()).hexdigest()}-{srs_sha[:16]}" / "vk.key")
    if path.is_file():
        return path.read_bytes(), f"rebuilt from the given model + settings + SRS (cached in {path.parent})"
    start = time.perf_counter()
    try:
        key = build_vk(model, settings, srs_path)
    except RuntimeError as exc:
        return None, f"EZKL could not build the circuit of the given model with the proof's settings " \
                     f"({str(exc).splitlines()[0][:160]})"
    with contextlib.suppress(OSError):  # a read-only CIRO_HOME only costs the next check a rebuild
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".vk.{os.getpid()}.tmp")
        tmp.write_bytes(key)
        os.replace(tmp, path)
    return key, f"rebuilt from the given model + settings + SRS in {time.perf_counter() - start:.1f} s"


def _read_vk(vk: str | os.PathLike[str] | bytes | None) -> bytes | None:
    if vk is None or isinstance(vk, bytes):
        return vk
    try:
        return Path(vk).read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read the verifying key {vk}: {exc}. Pass the vk.key file you trust, or leave "
                         "--vk out to rebuild the key from --model.") from exc


def _find_srs_by_hash(digest: str, cfg: Config, sha256_file: Any) -> Path | None:
    folders = [Path(cfg.srs_dir)] if cfg.srs_dir else []
    folders.append(cfg.paths.srs)
    for folder in folders:
        for cand in sorted(folder.glob("*.srs")) if folder.is_dir() else []:
            if sha256_file(cand) == digest:
                return cand
    return None
