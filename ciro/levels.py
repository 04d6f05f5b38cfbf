"""Verification levels: what evidence comes back with a result, and the facts of each (one place)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import InputError

__all__ = ["VerificationLevel"]


class VerificationLevel(enum.StrEnum):
    """What evidence comes back with a result (``docs/verification.md``). Each member carries its facts:
    ``signs_receipt`` (the worker signs the job's commitments), ``settles_on_chain`` (a job at this level can be
    escrowed and paid by the JobManager, which checks that signature) and ``proves`` (what a valid result proves,
    and what it does not: the one text the SDK, the CLI, the MLflow target and the magics show).

    ``NONE``: the output and its commitments only. ``RECEIPT`` (the default): the worker's Stark-key signature.
    ``QUORUM``: k = 3f+1 distinct workers, accepted when 2f+1 agree. ``ZKML``: an EZKL proof of the evaluation.
    """

    NONE = "none"
    RECEIPT = "receipt"
    QUORUM = "quorum"
    ZKML = "zk"

    @property
    def signs_receipt(self) -> bool:
        """Whether the worker signs a receipt over the job's commitments (a quorum: every voter)."""
        return _FACTS[self].signs_receipt

    @property
    def settles_on_chain(self) -> bool:
        """Whether a job at this level can be paid on chain (the JobManager checks its signed receipt)."""
        return _FACTS[self].settles_on_chain

    @property
    def proves(self) -> str:
        """What a valid result at this level proves, and what it does not (``docs/verification.md``)."""
        return _FACTS[self].proves

    @classmethod
    def parse(cls, value: VerificationLevel | str | bool | None) -> VerificationLevel:
        if value is None or value is False:
            return cls.NONE
        if isinstance(value, cls):
            return value
        text = str(value).lower()
        aliases = {"zkml": cls.ZKML, "zk": cls.ZKML, "none": cls.NONE, "receipt": cls.RECEIPT,
                   "quorum": cls.QUORUM}
        if text not in aliases:
            raise InputError(f"Unknown verification level {value!r}. Use one of: none, receipt, quorum, zk.")
        return aliases[text]


@dataclass(frozen=True)
class _LevelFacts:
    signs_receipt: bool
    settles_on_chain: bool
    proves: str


_FACTS: dict[VerificationLevel, _LevelFacts] = {
    VerificationLevel.NONE: _LevelFacts(
        False, False, "nothing about who computed the output or whether it is correct: only which model, inputs "
                      "and outputs the result refers to"),
    VerificationLevel.RECEIPT: _LevelFacts(
        True, True, "that the worker holding the signing key vouched for exactly these model, input and output "
                    "commitments; not that the output is correct"),
    VerificationLevel.ZKML: _LevelFacts(
        True, True, "that the output is the fixed-point evaluation of the model whose verifying key the proof "
                    "checks against, on the proof's public input, within the stated tolerance; only sound if the "
                    "prover did not make the SRS"),
    VerificationLevel.QUORUM: _LevelFacts(
        True, True, "that at least 2f+1 distinct worker keys each signed an output agreeing with this one under the "
                    "stated policy; agreement, not correctness (colluding or identically wrong workers agree too)"),
}
