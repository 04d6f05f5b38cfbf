"""The chain path's client and devnet costs: starknet-py's defaults against what ciro uses, in one process.

    python bench/chain_speed.py [--rounds 5]

Each pair runs the same work both ways, interleaved, median of --rounds:
- signing a transaction hash: starknet-py's default signer (crypto-cpp-py) vs ``ciro.chain.signer.IdentitySigner``;
- binding a contract (CDCPool): the ABI parse every fresh ``starknet_py.contract.Contract`` makes (a new Lark
  grammar a type) vs the ABI parsed once a process (``ciro.chain.artifacts.parsed_abi``: later bindings reuse it);
- a Sierra class hash (JobManager): poseidon-py vs the Rust Poseidon (``ciro.chain.fasthash``);
- the devnet's field arithmetic (1,000 modular inverses, 20 square roots): cairo-lang's sympy vs
  ``ciro_devnet._cairo_math``.
The last line names the total of one of each.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from common import median_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from poseidon_py.poseidon_hash import poseidon_hash_many as poseidon_py_many
    from starknet_py.abi.v2 import parser_transformer
    from starknet_py.cairo.v2 import type_parser
    from starknet_py.contract import ContractData
    from starknet_py.hash import sierra_class_hash as sch
    from starknet_py.hash.utils import message_signature
    from starknet_py.net.client_models import SierraCompiledContract
    from starknet_py.net.schemas.rpc.contract import SierraCompiledContractSchema

    import ciro_devnet.vm  # noqa: F401  (installs the fast field arithmetic; the originals stay reachable)
    from ciro import Identity
    from ciro.chain import fasthash
    from ciro.chain.artifacts import abi, load_class, parsed_abi
    from ciro_devnet import _cairo_math
    from ciro_devnet.classes import sierra_rpc_form

    ident = Identity.generate("bench")
    msg = 0x1234567890ABCDEF << 100
    pairs: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = []
    pairs.append(("sign a transaction hash", lambda: message_signature(msg_hash=msg, priv_key=ident.private_key),
                  lambda: ident.sign(msg)))

    cdc_abi = abi("CDCPool")

    parsed_abi("CDCPool")  # the one parse a process pays (and ciro's one grammar installed)
    one_grammar = type_parser.parse

    def bind_default() -> None:
        type_parser.parse = parser_transformer.parse  # starknet-py's own: a new grammar a type
        try:
            ContractData.from_abi(1, cdc_abi, 1).parsed_abi  # what every Contract(...) does first  # noqa: B018
        finally:
            type_parser.parse = one_grammar

    def bind_cached() -> None:
        data = ContractData.from_abi(1, cdc_abi, 1)
        data.__dict__["parsed_abi"] = parsed_abi("CDCPool")

    sierra: Any = SierraCompiledContractSchema().load(sierra_rpc_form(load_class("JobManager")[0]))
    assert isinstance(sierra, SierraCompiledContract)

    def class_hash_with(many: Callable[..., int]) -> Callable[[], int]:
        def run() -> int:
            sch.poseidon_hash_many = many  # type: ignore[attr-defined]
            return int(sch.compute_sierra_class_hash(sierra))
        return run

    def arith(div_mod: Callable[..., int], sqrt: Callable[..., int]) -> Callable[[], None]:
        p = _cairo_math.PRIME

        def run() -> None:
            for i in range(1, 1001):
                div_mod(i, i * 7919 + 3, p)
            for i in range(1, 21):
                sqrt(i * i + 4 * i + 4, p)
        return run

    originals = _cairo_math._originals
    pairs.append(("bind CDCPool (ABI)", bind_default, bind_cached))
    pairs.append(("JobManager class hash", class_hash_with(poseidon_py_many),
                  class_hash_with(fasthash.poseidon_hash_many)))
    pairs.append(("devnet field arithmetic", arith(originals["div_mod"], originals["sqrt"]),
                  arith(_cairo_math.div_mod, _cairo_math.sqrt)))
    assert class_hash_with(poseidon_py_many)() == class_hash_with(fasthash.poseidon_hash_many)()

    totals = [0.0, 0.0]
    print(f"{'work':28} {'starknet-py / cairo-lang':>26} {'ciro':>12} {'ratio':>8}")
    for name, slow, fast in pairs:
        before, after = median_s(slow, args.rounds), median_s(fast, args.rounds)
        totals[0] += before
        totals[1] += after
        print(f"{name:28} {before * 1000:23.2f} ms {after * 1000:9.2f} ms {after / before:8.3g}")
    sch.poseidon_hash_many = fasthash.poseidon_hash_many  # type: ignore[attr-defined]
    print(f"chain path, one of each: ciro {totals[1] * 1000:,.1f} ms vs defaults {totals[0] * 1000:,.1f} ms "
          f"(ratio {totals[1] / totals[0]:.3f})")


if __name__ == "__main__":
    main()
