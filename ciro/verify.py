"""Offline verification of a job result: no network, no trust in the gateway.

``verify(result)`` recomputes what can be recomputed from the result itself (the output
commitment from the outputs) and checks the evidence its level carries (a receipt's fields and
Stark signature). Given the inputs, the model file or a list of trusted worker keys, it also
binds the result to them. Each check reports a reason when it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .errors import InputError
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
        lines = [f"job {self.job_id}: level {self.level.value}"]
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
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"Not a Ciro job result ({exc}). Save one with `ciro infer --out r.json` or "
                         "JobResult.to_dict().") from exc


def verify(result: JobResult | Mapping[str, Any] | str | os.PathLike[str], *,
           inputs: Mapping[str, np.ndarray] | None = None, model: str | os.PathLike[str] | bytes | None = None,
           trusted_workers: Iterable[str] | None = None, srs: str | os.PathLike[str] | None = None,
           rebuild_vk: bool = False, config: Config | None = None) -> VerificationReport:
    """Check a result offline. ``inputs``, ``model`` and ``trusted_workers`` bind it further when given.

    zk results also need the SRS the proof was made with (``srs``, else found by its hash in
    ``srs_dir`` or ``$CIRO_HOME/srs``); ``rebuild_vk`` (with ``model``) rebuilds the verifying key."""
    r = _load(result)
    model_bytes: bytes | None = None
    report = VerificationReport(r.job_id, r.verification)
    if r.outputs is None or r.output_commitment is None:
        report.add("outputs", False, f"the result has no outputs (status {r.status.value})")
        return report
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
        _check_receipt(report, r, trusted_workers)
    elif r.verification is VerificationLevel.QUORUM:
        _check_quorum(report, r, trusted_workers)
    elif r.verification is VerificationLevel.ZKML:
        _check_receipt(report, r, trusted_workers)
        _check_zk(report, r, inputs, srs, model_bytes if rebuild_vk else None, config or Config.load())
    elif r.verification is not VerificationLevel.NONE:
        report.add("evidence", False, f"level {r.verification.value!r} is not verifiable by this build")
    return report


def _check_receipt(report: VerificationReport, r: JobResult, trusted: Iterable[str] | None) -> None:
    rc = r.receipt
    if rc is None:
        report.add("receipt", False, "the result carries no receipt")
        return
    fields = {"job_id": r.job_id, "model_hash": r.model_hash, "input_commitment": r.input_commitment,
              "output_commitment": r.output_commitment, "level": r.verification.value}
    wrong = sorted(k for k, v in fields.items() if getattr(rc, k) != v)
    report.add("receipt fields", not wrong, "describe this result" if not wrong else
               f"receipt {', '.join(wrong)} differ from the result's")
    report.add("receipt signature", rc.signature_valid(),
               f"valid Stark ECDSA signature by {rc.worker_key[:18]}..." if rc.signature_valid() else
               f"not a valid signature by worker key {rc.worker_key[:18]}... over the receipt")
    if trusted is not None:
        keys = {int(k, 16) for k in trusted}
        known = int(rc.worker_key, 16) in keys
        report.add("worker key", known, "is in the trusted list" if known else
                   f"{rc.worker_key[:18]}... is not among the {len(keys)} trusted worker key(s)")


def _check_quorum(report: VerificationReport, r: JobResult, trusted: Iterable[str] | None) -> None:
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
    expected = {"job_id": r.job_id, "model_hash": r.model_hash, "input_commitment": r.input_commitment,
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
        elif not rc.signature_valid():
            problems.append(f"vote {i}: invalid signature by {rc.worker_key[:18]}...")
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


def _check_zk(report: VerificationReport, r: JobResult, inputs: Mapping[str, np.ndarray] | None,
              srs: str | os.PathLike[str] | None, rebuild_from: bytes | None, cfg: Config) -> None:
    from .zk import DEV_SRS_WARNING, sha256_file, zk_check

    art = r.zk
    if not isinstance(art, dict) or "proof" not in art:
        report.add("zk proof", False, "the result carries no proof artifact")
        return
    fields = {"model_hash": r.model_hash, "input_commitment": r.input_commitment,
              "output_commitment": r.output_commitment}
    wrong = sorted(k for k, v in fields.items() if art.get(k) != v)
    report.add("zk artifact", not wrong, "names this result's model and commitments" if not wrong else
               f"artifact {', '.join(wrong)} differ from the result's")
    srs_path = Path(srs) if srs else _find_srs_by_hash(art["srs"]["sha256"], cfg, sha256_file)
    if srs_path is None:
        report.add("zk srs", False, f"SRS {art['srs']['name']} (sha256 {art['srs']['sha256'][:16]}...) not found: "
                   "pass --srs PATH")
        return
    assert r.outputs is not None
    names_in = sorted(inputs) if inputs is not None else None
    try:
        checks = zk_check(art, outputs=list(r.outputs.values()),
                          inputs=[inputs[n] for n in names_in] if inputs is not None and names_in else None,
                          srs_path=srs_path, rebuild_from=rebuild_from)
    except (KeyError, TypeError, ValueError) as exc:
        report.add("zk artifact", False, f"malformed proof artifact ({exc})")
        return
    for name, ok, detail in checks:
        report.add(name, ok, detail)
    if inputs is None:
        report.notes.append("the proof's inputs were not compared with the job's inputs (pass them: -i / inputs=)")
    if art["srs"].get("kind") != "pinned":
        report.notes.append(DEV_SRS_WARNING)


def _find_srs_by_hash(digest: str, cfg: Config, sha256_file: Any) -> Path | None:
    folders = [Path(cfg.srs_dir)] if cfg.srs_dir else []
    folders.append(cfg.home / "srs")
    for folder in folders:
        for cand in sorted(folder.glob("*.srs")) if folder.is_dir() else []:
            if sha256_file(cand) == digest:
                return cand
    return None
