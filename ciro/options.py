"""Job options: the one list of what a job may ask for, each checked and typed.

Every option here is acted on: the quorum policy (``f``, ``rtol``, ``atol``) decides when a quorum job is
accepted, the hardware options place the job (``gpu``, ``gpu_memory_gb``, ``gpu_model``, ``cpu_only``), ``fresh``
runs a job the gateway could otherwise answer from its result cache (``docs/verification.md``, "Reused results").
Anything else is refused with this list, so a typo (``verify="zk"`` for ``verification="zk"``) fails
loudly instead of running the job at another level. The SDK checks before sending, the gateway again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InputError

__all__ = ["JOB_OPTIONS", "OptionSpec", "check_options", "options_doc"]

#: Near any float's range, far below what a JSON number or SQLite can carry.
_MAX_NUMBER = 1e12


@dataclass(frozen=True)
class OptionSpec:
    name: str
    kind: str
    doc: str
    parse: Callable[[str, Any], Any]


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return value.lower() in {"true", "1", "yes"}
    raise InputError(f"Option {name!r} must be true or false, not {value!r}.")


def _number(lo: float, hi: float) -> Callable[[str, Any], float]:
    def parse(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InputError(f"Option {name!r} must be a number, not {value!r}.")
        try:
            out = float(value)
        except (ValueError, OverflowError):
            raise InputError(f"Option {name!r} must be a number, not {value!r}.") from None
        if not (math.isfinite(out) and lo <= out <= hi):
            raise InputError(f"Option {name!r} must be between {lo:g} and {hi:g}, not {value!r}.")
        return out
    return parse


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise InputError(f"Option {name!r} must be an integer, not {value!r}.")
        try:
            out = int(value)
        except (ValueError, OverflowError):
            raise InputError(f"Option {name!r} must be an integer, not {value!r}.") from None
        if (out != value and str(out) != value) or not lo <= out <= hi:
            raise InputError(f"Option {name!r} must be an integer between {lo} and {hi}, not {value!r}.")
        return out
    return parse


def _text(max_len: int) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            raise InputError(f"Option {name!r} must be a non-empty string of at most {max_len} characters, "
                             f"not {value!r}.")
        return value
    return parse


def _gpu(name: str, value: Any) -> bool | str:
    if isinstance(value, str) and value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
        return _text(64)(name, value)
    return _bool(name, value)


_SPECS = [
    OptionSpec("f", "integer 1-100", "quorum: tolerated faulty workers; k = 3f+1 run the job, 2f+1 must agree",
               _int(1, 100)),
    OptionSpec("rtol", "number >= 0", "quorum: relative tolerance when comparing float outputs",
               _number(0.0, _MAX_NUMBER)),
    OptionSpec("atol", "number >= 0", "quorum: absolute tolerance when comparing float outputs",
               _number(0.0, _MAX_NUMBER)),
    OptionSpec("gpu", "bool or GPU name", "true: a worker holding a GPU share runs it; a name such as \"H100\" "
               "(the SDK's gpu_preference) is a preference: a free worker whose GPU model contains it is picked "
               "first, else any free worker that fits", _gpu),
    OptionSpec("gpu_memory_gb", "number >= 0", "at least this much GPU memory in the worker's share (GB: a 0.5 "
               "share of an 80 GB GPU has 40)", _number(0.0, 1e6)),
    OptionSpec("gpu_model", "string", "the GPU's model name contains this (case-insensitive), e.g. \"H100\"",
               _text(64)),
    OptionSpec("cpu_only", "bool", "true: a worker without a GPU share runs it", _bool),
    OptionSpec("fresh", "bool", "run again even if an identical job's result is cached (true: the job runs on a "
               "worker and its result replaces the cached one)", _bool),
]
#: name -> spec, in the order the docs list them.
JOB_OPTIONS: dict[str, OptionSpec] = {s.name: s for s in _SPECS}


def options_doc() -> str:
    """One line per option, for help texts and the OpenAPI description."""
    return "; ".join(f"{s.name} ({s.kind}): {s.doc}" for s in _SPECS)


def check_options(options: Mapping[str, Any] | None, *, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The options, each parsed to its type; unknown names and bad values raise :class:`InputError`.

    ``extra`` names arguments the caller takes itself (e.g. the SDK's ``max_payment``), for the message only.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InputError(f"Job options must be an object of name -> value, not {type(options).__name__}.")
    unknown = sorted(str(k) for k in options if k not in JOB_OPTIONS)
    if unknown:
        known = sorted([*JOB_OPTIONS, *(extra or {})])
        raise InputError(
            f"Unknown job option(s) {', '.join(repr(k) for k in unknown)}. Known options: {', '.join(known)}"
            + (" (the verification level is its own argument: verification='zk')"
               if any(k in {"verify", "level", "verification_level", "zk"} for k in unknown) else "")
            + ". Fix the name or drop it.",
            detail={"unknown": unknown, "known": known})
    return {name: JOB_OPTIONS[name].parse(name, value) for name, value in options.items()}
