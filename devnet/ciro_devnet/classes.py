"""Contract classes: a Sierra class in its RPC form, its CASM, the class hash and the compiled class hash.

The class hash is Starknet's (Poseidon over the entry points, the keccak of the ABI string and the Sierra program,
computed by starknet-py), the compiled class hash is the Poseidon one (starknet_version < 0.14.1) that cairo-lang
0.14.0.1 computes. The node compiles declared Sierra to CASM itself, with cairo-lang's bundled
`starknet-sierra-compile --add-pythonic-hints` (the hints the Python Cairo VM runs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import COMPILATION_FAILED, RpcError

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class ContractClassArtifact:
    """A declared (or declarable) Cairo 1 class."""

    class_hash: int
    compiled_class_hash: int
    sierra: JsonDict  # RPC form: sierra_program, contract_class_version, entry_points_by_type, abi (a string)
    casm: JsonDict  # the compiler's CASM JSON, with pythonic hints

    @property
    def abi(self) -> list[Any]:
        return list(json.loads(self.sierra["abi"]))

    def to_json(self) -> JsonDict:
        return {
            "class_hash": hex(self.class_hash),
            "compiled_class_hash": hex(self.compiled_class_hash),
            "sierra": self.sierra,
            "casm": self.casm,
        }

    @classmethod
    def from_json(cls, data: JsonDict) -> ContractClassArtifact:
        return cls(
            class_hash=int(data["class_hash"], 16),
            compiled_class_hash=int(data["compiled_class_hash"], 16),
            sierra=data["sierra"],
            casm=data["casm"],
        )


def sierra_rpc_form(sierra: JsonDict) -> JsonDict:
    """The RPC form of a compiler's (or a transaction's) Sierra class: hex felts, ABI as a string.

    A list ABI is serialised with `json.dumps` defaults, as starknet-py does when it declares the same file, so both
    sides compute the same class hash.
    """
    abi = sierra.get("abi", [])
    entry_points = {
        kind: [
            {"selector": hex(_int(ep["selector"])), "function_idx": int(ep["function_idx"])}
            for ep in sierra["entry_points_by_type"].get(kind, [])
        ]
        for kind in ("CONSTRUCTOR", "EXTERNAL", "L1_HANDLER")
    }
    return {
        "sierra_program": [hex(_int(felt)) for felt in sierra["sierra_program"]],
        "contract_class_version": str(sierra["contract_class_version"]),
        "entry_points_by_type": entry_points,
        "abi": abi if isinstance(abi, str) else json.dumps(abi),
    }


def _int(value: int | str) -> int:
    return value if isinstance(value, int) else int(value, 16)


def fast_hashes() -> None:
    """starknet-py's Poseidon from the Rust binding (``ciro.chain.fasthash``: same hashes, ~8x faster), once."""
    from ciro.chain.fasthash import install

    install()


def sierra_class_hash(sierra: JsonDict) -> int:
    """Starknet's class hash of a Sierra class in RPC form."""
    from starknet_py.hash.sierra_class_hash import compute_sierra_class_hash
    from starknet_py.net.schemas.rpc.contract import SierraCompiledContractSchema

    fast_hashes()

    contract = SierraCompiledContractSchema().load(sierra)
    return int(compute_sierra_class_hash(contract))


def compiled_class_hash(casm: JsonDict) -> int:
    """The Poseidon compiled class hash of a CASM class (what Starknet < 0.14.1 commits to)."""
    from starknet_py.common import create_casm_class
    from starknet_py.hash.casm_class_hash import compute_casm_class_hash
    from starknet_py.hash.hash_method import HashMethod

    fast_hashes()

    return int(compute_casm_class_hash(create_casm_class(json.dumps(casm)), hash_method=HashMethod.POSEIDON))


def starkware_root() -> Path:
    """The installed `starkware` package (cairo-lang), found without importing it."""
    spec = importlib.util.find_spec("starkware")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cairo-lang is not installed: pip install 'ciro-network[chain]'")
    return Path(next(iter(spec.submodule_search_locations)))


def sierra_compiler() -> Path:
    """cairo-lang's bundled Sierra -> CASM compiler."""
    return starkware_root() / "starknet/compiler/v1/sierra-compiler-major-1/bin/starknet-sierra-compile"


def compile_casm(sierra: JsonDict) -> JsonDict:
    """Compile a Sierra class (any form) to CASM with the pythonic hints the Python VM needs."""
    program = {
        "sierra_program": [hex(_int(felt)) for felt in sierra["sierra_program"]],
        "contract_class_version": sierra["contract_class_version"],
        "entry_points_by_type": sierra["entry_points_by_type"],
    }
    with tempfile.TemporaryDirectory(prefix="ciro-sierra-") as tmp:
        source = os.path.join(tmp, "class.sierra.json")
        with open(source, "w") as f:
            json.dump(program, f)
        proc = subprocess.run(
            [str(sierra_compiler()), "--add-pythonic-hints", source], capture_output=True, text=True, check=False
        )
    if proc.returncode != 0:
        raise RpcError(COMPILATION_FAILED, data=proc.stderr.strip() or "starknet-sierra-compile failed")
    return dict(json.loads(proc.stdout))


def load_artifact(
    sierra_path: str | os.PathLike[str], casm_path: str | os.PathLike[str] | None = None
) -> ContractClassArtifact:
    """A class from compiled files: the Sierra JSON and, optionally, its CASM (compiled here when absent)."""
    sierra = sierra_rpc_form(json.loads(Path(sierra_path).read_text()))
    casm = json.loads(Path(casm_path).read_text()) if casm_path is not None else compile_casm(sierra)
    if "pythonic_hints" not in casm:
        raise ValueError(f"{casm_path}: CASM without pythonic hints (compile with --add-pythonic-hints)")
    return ContractClassArtifact(
        class_hash=sierra_class_hash(sierra), compiled_class_hash=compiled_class_hash(casm), sierra=sierra, casm=casm
    )


def artifact_from_sierra(sierra: JsonDict) -> ContractClassArtifact:
    """A class declared over RPC: hash its Sierra and compile the CASM."""
    rpc_form = sierra_rpc_form(sierra)
    casm = compile_casm(rpc_form)
    class_hash = sierra_class_hash(rpc_form)
    return ContractClassArtifact(class_hash, compiled_class_hash(casm), sierra=rpc_form, casm=casm)
