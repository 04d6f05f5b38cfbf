"""The compiled Ciro contracts (Sierra + CASM), as committed under ``contracts/compiled``.

A wheel carries them as ``ciro/chain/_compiled``; a source checkout reads ``contracts/compiled``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["CONTRACTS", "abi", "compiled_dir", "load_class", "parsed_abi"]

#: Every contract the chain side uses.
CONTRACTS = ("CiroAccount", "UniversalDeployer", "CiroToken", "CDCPool", "JobManager", "CiroLedger")


def compiled_dir() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (here / "_compiled", here.parents[1] / "contracts" / "compiled"):
        if (cand / "manifest.json").is_file():
            return cand
    raise ConfigError("The compiled Ciro contracts are missing (contracts/compiled). Rebuild them with "
                      "`make contracts`, or reinstall ciro-network.")


@functools.cache
def load_class(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Sierra, CASM) of a contract as JSON."""
    if name not in CONTRACTS:
        raise ConfigError(f"Unknown contract {name!r}; known: {', '.join(CONTRACTS)}.")
    d = compiled_dir()
    sierra = json.loads((d / f"{name}.sierra.json").read_text())
    casm = json.loads((d / f"{name}.casm.json").read_text())
    return sierra, casm


def abi(name: str) -> list[dict[str, Any]]:
    raw = load_class(name)[0]["abi"]
    return json.loads(raw) if isinstance(raw, str) else list(raw)


@functools.cache
def parsed_abi(name: str) -> Any:
    """A contract's ABI as starknet-py parses it (its ``ContractData.parsed_abi``), once a process.

    starknet-py parses an ABI again for every ``Contract``, and builds a new Lark grammar for every type in it
    (~90 ms each, 3-7 s for CDCPool here); every CLI command and client binds several contracts. The types are
    parsed here with one grammar, built once, the same grammar and transformer starknet-py uses.
    """
    from starknet_py.contract import ContractData

    _one_type_grammar()
    return ContractData.from_abi(0, abi(name), 1).parsed_abi


@functools.cache
def _one_type_grammar() -> None:
    import lark
    from starknet_py.abi.v2 import parser_transformer
    from starknet_py.cairo.v2 import type_parser

    grammar = lark.Lark(grammar=parser_transformer.ABI_EBNF, start="type", parser="earley")

    def parse(code: str, type_identifiers: Any) -> Any:
        return parser_transformer.ParserTransformer(type_identifiers).transform(grammar.parse(code))

    type_parser.parse = parse  # the name starknet-py's TypeParser calls
