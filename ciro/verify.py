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

from .errors import InputError
from .jobs import JobResult, VerificationLevel
from .modelstore import read_model_file
from .tensors import commitment

__all__ = ["Check", "VerificationReport", "verify"]

_PROVES = {
    VerificationLevel.NONE: "nothing about who computed the output or whether it is correct: only which "
                            "model, inputs and outputs the result refers to",
    VerificationLevel.RECEIPT: "that the worker holding the signing key vouched for exactly these model, input and "
                               "output commitments; not that the output is correct",
}


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

    @property
    def valid(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def proves(self) -> str:
        return _PROVES.get(self.level, "(this level is not verified by this build)")

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def text(self) -> str:
        lines = [f"job {self.job_id}: level {self.level.value}"]
        lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
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
           trusted_workers: Iterable[str] | None = None) -> VerificationReport:
    """Check a result offline. ``inputs``, ``model`` and ``trusted_workers`` bind it further when given."""
    r = _load(result)
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
        mh = hashlib.sha256(data).hexdigest()
        report.add("model hash", mh == r.model_hash, "matches the given model" if mh == r.model_hash else
                   f"the given model hashes to {mh[:16]}..., the result claims {r.model_hash[:16]}...")
    if r.verification is VerificationLevel.RECEIPT:
        _check_receipt(report, r, trusted_workers)
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
